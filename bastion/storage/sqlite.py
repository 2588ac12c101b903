"""The SQLite implementation of the store (the embedded default), through sqlite-utils.

WAL with synchronous=NORMAL: a committed batch survives a crash of the bastion process; only a power
loss can cost the last batches. Writes go through one batching writer thread (writer.py); reads use
one connection of their own, shared by threads under a lock. Every SQL statement of the bastion is in
this package; the interface it implements is interface.py (docs/design/0007-storage.md).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bastion.audit import chain
from bastion.audit.events import ChainedEvent, Event, SessionInfo
from bastion.control.approvals import ApprovalRequest
from bastion.storage import approvals
from bastion.storage.approvals import ApprovalTables
from bastion.storage.schema import SCHEMA
from bastion.storage.writer import BatchWriter

__all__ = ["SqliteStore"]

T = TypeVar("T")
READ_BATCH = 1000  # rows fetched per hold of the read lock when iterating events


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=10.0, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


def _session_row(info: SessionInfo) -> dict[str, Any]:
    row = dataclasses.asdict(info)
    row["groups"] = json.dumps(list(info.groups))
    row["extra"] = json.dumps(info.extra, sort_keys=True)
    return row


def _session_from_row(row: dict[str, Any]) -> SessionInfo:
    row = dict(row)
    row["groups"] = tuple(json.loads(row["groups"] or "[]"))
    row["extra"] = json.loads(row["extra"] or "{}")
    return SessionInfo(**row)


class SqliteStore:
    """Append-only evidence and approvals in one SQLite database (WAL), written by one batching thread."""

    def __init__(self, path: Path, flush_interval: float = 0.05) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():  # recordings are private: 0600 (SQLite gives -wal and -shm the same mode)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        writer_conn = _connect(path)
        for statement in SCHEMA:
            writer_conn.execute(statement)
        self._reader = sqlite_utils.Database(_connect(path))
        self._read_lock = threading.Lock()
        self._writer = BatchWriter(writer_conn, flush_interval)
        self._frontier = chain.MerkleFrontier()  # owned by the writer thread
        self._heads: dict[str, bytes] = {}  # chain head of each session this process records
        self._closed = False

    # Writes: queued, committed in batches by the writer thread.
    def _submit(self, op: Callable[[sqlite3.Connection], T]) -> Future[T]:
        return self._writer.submit(op)

    def approvals_write(self, op: Callable[[ApprovalTables], T]) -> Future[T]:
        """Run `op` on the approval tables in one transaction of the writer (read, check and write atomically)."""
        return self._submit(lambda c: op(ApprovalTables(c)))

    def append_events(self, events: list[Event]) -> None:
        """Queue events; the writer thread chains them (hashing stays off the event loop)."""
        self._submit(lambda c: self._chain(c, events))

    def _chain(self, conn: sqlite3.Connection, events: list[Event]) -> None:
        rows = []
        for e in events:
            prev = self._heads.get(e.session_id, chain.GENESIS)
            digest = chain.event_hash(e.session_id, e.seq, e.ts, e.type, e.data, prev)
            self._heads[e.session_id] = digest
            rows.append((e.session_id, e.seq, e.ts, e.type, e.data, prev, digest))
        conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def chain_head(self, session_id: str, forget: bool = False) -> Future[bytes]:
        """The hash of a session's last event queued so far (after the writer has chained it)."""
        heads = self._heads
        return self._submit(lambda c: (heads.pop if forget else heads.get)(session_id, chain.GENESIS))

    def insert_events(self, events: list[ChainedEvent]) -> None:
        """Insert events exactly as given (hashes included); for tests and imports."""
        rows = [(e.session_id, e.seq, e.ts, e.type, e.data, e.prev_hash, e.hash) for e in events]
        self._submit(lambda c: c.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)", rows))

    def put_session(self, info: SessionInfo) -> None:
        row = _session_row(info)
        columns = ", ".join(f'"{name}"' for name in row)  # quoted: "user" is reserved in PostgreSQL
        marks = ", ".join("?" for _ in row)
        self._submit(lambda c: c.execute(f"INSERT INTO sessions ({columns}) VALUES ({marks})", list(row.values())))

    def update_session(self, session_id: str, **fields: Any) -> None:
        if "extra" in fields:
            fields["extra"] = json.dumps(fields["extra"], sort_keys=True)
        assignments = ", ".join(f'"{name}" = ?' for name in fields)
        values = [*fields.values(), session_id]
        self._submit(lambda c: c.execute(f"UPDATE sessions SET {assignments} WHERE id = ?", values))

    def log(self, type_: str, **fields: Any) -> Future[None]:
        """Append to the global audit log (logins, refusals, issuances, ...): a leaf of its Merkle tree."""
        text = json.dumps(fields, sort_keys=True, default=str)
        now = time.time()

        def append(c: sqlite3.Connection) -> None:
            # The index is taken inside the write transaction, so several processes share one log.
            seq = c.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM audit_log").fetchone()[0]
            leaf = chain.leaf_hash(chain.audit_entry(seq, now, type_, text))
            c.execute("INSERT INTO audit_log VALUES (?, ?, ?, ?, ?)", (seq, now, type_, text, leaf))

        return self._submit(append)

    def put_seal(self, session_id: str, body: dict[str, Any], signature: str, table: str = "seals") -> None:
        text = chain.canonical_json(body).decode()
        self._submit(lambda c: c.execute(f"INSERT INTO {table} VALUES (?, ?, ?)", (session_id, text, signature)))

    def checkpoint(self, origin: str, signer: Ed25519PrivateKey) -> Future[None]:
        """Sign a checkpoint of the audit log if it grew since the last one."""

        def write(c: sqlite3.Connection) -> None:
            frontier = self._frontier
            for (leaf,) in c.execute("SELECT leaf_hash FROM audit_log WHERE seq >= ? ORDER BY seq", (frontier.size,)):
                frontier.append(bytes(leaf))
            last = c.execute("SELECT MAX(size) FROM checkpoints").fetchone()[0] or 0
            if frontier.size > last:
                point = chain.Checkpoint(origin, frontier.size, frontier.root())
                note = chain.sign_note(point.text(), origin, signer)
                c.execute("INSERT INTO checkpoints VALUES (?, ?, ?, ?)", (point.size, point.root, note, time.time()))

        return self._submit(write)

    def prune_events(self, session_id: str, tombstone: dict[str, Any], signature: str) -> Future[None]:
        """Replace a sealed session's events with a signed tombstone (retention)."""
        text = chain.canonical_json(tombstone).decode()

        def prune(c: sqlite3.Connection) -> None:
            c.execute("INSERT INTO tombstones VALUES (?, ?, ?)", (session_id, text, signature))
            c.execute("DELETE FROM events WHERE session_id = ?", (session_id,))

        return self._submit(prune)

    def record_certificate(self, row: dict[str, Any]) -> Future[Any]:
        row = {**row, "groups": json.dumps(list(row["groups"])), "principals": json.dumps(list(row["principals"]))}
        columns = ", ".join(f'"{name}"' for name in row)  # quoted: "user" is reserved in PostgreSQL
        marks = ", ".join("?" for _ in row)
        return self._submit(
            lambda c: c.execute(f"INSERT INTO certificates ({columns}) VALUES ({marks})", list(row.values()))
        )

    def revoke(self, serial: int | None = None, user: str | None = None) -> Future[list[dict[str, Any]]]:
        """Mark a certificate (by serial) or every unexpired certificate of a user as revoked."""
        now = time.time()

        def revoke(c: sqlite3.Connection) -> list[dict[str, Any]]:
            args: list[Any]
            if serial is not None:
                where, args = "serial = ?", [serial]
            else:
                where, args = '"user" = ? AND valid_before > ?', [user, now]
            rows = c.execute(
                f'SELECT serial, "user" FROM certificates WHERE {where} AND revoked_at IS NULL', args
            ).fetchall()
            c.executemany("UPDATE certificates SET revoked_at = ? WHERE serial = ?", [(now, r[0]) for r in rows])
            if user is not None:  # and tokens issued before now will not get the user a new certificate
                c.execute(
                    'INSERT INTO user_revocations ("user", revoked_at) VALUES (?, ?) '
                    'ON CONFLICT ("user") DO UPDATE SET revoked_at = excluded.revoked_at',
                    [user, now],
                )
            return [{"serial": r[0], "user": r[1], "revoked_at": now} for r in rows]

        return self._submit(revoke)

    def user_revoked_at(self, user: str) -> float | None:
        """When `bastion cert revoke --user` last revoked this user (None: never)."""
        rows = self._query('SELECT revoked_at FROM user_revocations WHERE "user" = ?', [user])
        return float(rows[0]["revoked_at"]) if rows else None

    def revoked_since(self, since: float) -> list[dict[str, Any]]:
        rows = self._query(
            'SELECT serial, "user", revoked_at FROM certificates WHERE revoked_at > ? ORDER BY revoked_at', [since]
        )
        return list(rows)

    def last_event(self, session_id: str) -> tuple[int, bytes, float | None]:
        """(count, last hash, last timestamp) of what was committed for a session."""
        rows = list(
            self._query(
                "SELECT seq, hash, ts FROM events WHERE session_id = ? ORDER BY seq DESC LIMIT 1", [session_id]
            )
        )
        if not rows:
            return 0, chain.GENESIS, None
        return int(rows[0]["seq"]), bytes(rows[0]["hash"]), float(rows[0]["ts"])

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything queued so far, and what its completion queued (seals), is committed."""
        self._writer.flush(timeout)

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        self._closed = True
        self._writer.stop()
        self._reader.conn.close()

    def _query(self, sql: str, args: list[Any] | tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self._read_lock:
            return list(self._reader.query(sql, args))

    # Reads.
    def sessions(self, live: bool | None = None, limit: int = 1000) -> list[SessionInfo]:
        where, args = ("", []) if live is None else ("WHERE status = ?" if live else "WHERE status != ?", ["live"])
        rows = self._query(f"SELECT * FROM sessions {where} ORDER BY started_at DESC LIMIT {int(limit)}", args)
        return [_session_from_row(r) for r in rows]

    def session(self, session_id: str) -> SessionInfo | None:
        rows = self._query("SELECT * FROM sessions WHERE id = ?", [session_id])
        if not rows:
            rows = self._query("SELECT * FROM sessions WHERE id LIKE ? LIMIT 2", [session_id + "%"])
            if len(rows) != 1:
                return None
        return _session_from_row(rows[0])

    def events(self, session_id: str) -> Iterator[ChainedEvent]:
        after = 0
        while True:
            rows = self._query(
                f"SELECT * FROM events WHERE session_id = ? AND seq > ? ORDER BY seq LIMIT {READ_BATCH}",
                [session_id, after],
            )
            for row in rows:
                yield ChainedEvent(
                    row["session_id"],
                    row["seq"],
                    row["ts"],
                    row["type"],
                    bytes(row["data"] or b""),
                    bytes(row["prev_hash"]),
                    bytes(row["hash"]),
                )
            if len(rows) < READ_BATCH:
                return
            after = rows[-1]["seq"]

    def seal(self, session_id: str, table: str = "seals") -> tuple[dict[str, Any], str] | None:
        rows = self._query(f"SELECT body, signature FROM {table} WHERE session_id = ?", [session_id])
        return (json.loads(rows[0]["body"]), rows[0]["signature"]) if rows else None

    def audit_entries(self) -> Iterator[dict[str, Any]]:
        for row in self._query("SELECT * FROM audit_log ORDER BY seq"):
            yield {**row, "leaf_hash": bytes(row["leaf_hash"])}

    def checkpoints(self) -> list[dict[str, Any]]:
        return [{**r, "root": bytes(r["root"])} for r in self._query("SELECT * FROM checkpoints ORDER BY size")]

    def session_ids(self) -> list[str]:
        return [r["id"] for r in self._query("SELECT id FROM sessions ORDER BY started_at")]

    def audit_log(self, type_: str | None = None) -> list[dict[str, Any]]:
        where, args = ("WHERE type = ?", [type_]) if type_ else ("", [])
        rows = self._query(f"SELECT * FROM audit_log {where} ORDER BY seq", args)
        return [{**r, "fields": json.loads(r["fields"])} for r in rows]

    def certificate(self, serial: int) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM certificates WHERE serial = ?", [serial])
        if not rows:
            return None
        row = rows[0]
        return {**row, "groups": tuple(json.loads(row["groups"])), "principals": tuple(json.loads(row["principals"]))}

    # Approvals (writes: approvals_write).
    def approval(self, request_id: int) -> ApprovalRequest | None:
        with self._read_lock:
            return approvals.load(self._reader.conn, request_id)

    def approval_requests(self, pending_only: bool, now: float, limit: int) -> list[ApprovalRequest]:
        """Pending requests not yet expired at `now`, oldest first; or every request, newest first."""
        with self._read_lock:
            ids = approvals.request_ids(self._reader.conn, pending_only, now, limit)
            found = [approvals.load(self._reader.conn, request_id) for request_id in ids]
        return [request for request in found if request is not None]

    def grant_active(self, user: str, host: str, login: str, key: str, now: float) -> bool:
        """Whether a grant window for this grant key and user, host and login is open at `now`."""
        with self._read_lock:
            return approvals.grant_active(self._reader.conn, user, host, login, key, now)
