"""The one storage interface: sessions, their events, certificates and the audit log.

SQLite through sqlite-utils is the embedded default. Writes go through one writer thread that
commits what has queued up every `flush_interval` (a batch is one transaction), so the event loop
only ever appends to a queue. WAL with synchronous=NORMAL: a committed batch survives a crash of
the bastion process; only a power loss can cost the last batches. Reads use their own connection.
SQL stays portable (no SQLite-only syntax outside the PRAGMAs) for a later PostgreSQL backend.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
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

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS sessions (
        id TEXT PRIMARY KEY, connection_id TEXT, user TEXT, groups TEXT, cert_serial INTEGER,
        cert_key_id TEXT, source TEXT, target TEXT, target_address TEXT, login TEXT, kind TEXT,
        command TEXT, term TEXT, cols INTEGER, rows INTEGER, started_at REAL, ended_at REAL,
        exit_status INTEGER, exit_signal TEXT, bytes_in INTEGER, bytes_out INTEGER,
        end_reason TEXT, status TEXT, extra TEXT)""",
    """CREATE TABLE IF NOT EXISTS events (
        session_id TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL, type TEXT NOT NULL,
        data BLOB, prev_hash BLOB NOT NULL, hash BLOB NOT NULL, PRIMARY KEY (session_id, seq))""",
    """CREATE TABLE IF NOT EXISTS audit_log (
        seq INTEGER PRIMARY KEY, ts REAL NOT NULL, type TEXT NOT NULL, fields TEXT NOT NULL,
        leaf_hash BLOB NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS seals (
        session_id TEXT PRIMARY KEY, body TEXT NOT NULL, signature TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS tombstones (
        session_id TEXT PRIMARY KEY, body TEXT NOT NULL, signature TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS checkpoints (
        size INTEGER PRIMARY KEY, root BLOB NOT NULL, note TEXT NOT NULL, ts REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS certificates (
        serial INTEGER PRIMARY KEY, user TEXT NOT NULL, groups TEXT NOT NULL, key_id TEXT,
        principals TEXT, valid_after REAL, valid_before REAL, fingerprint TEXT, issuer TEXT,
        source TEXT, issued_at REAL, revoked_at REAL)""",
    """CREATE TABLE IF NOT EXISTS user_revocations (user TEXT PRIMARY KEY, revoked_at REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS sessions_started ON sessions (started_at)",
]

T = TypeVar("T")
_STOP = object()


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


class Store:
    """Append-only evidence in one SQLite database (WAL), written by one batching thread."""

    def __init__(self, path: Path, flush_interval: float = 0.05) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():  # recordings are private: 0600 (SQLite gives -wal and -shm the same mode)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._writer_conn = _connect(path)
        for statement in _SCHEMA:
            self._writer_conn.execute(statement)
        self._reader = sqlite_utils.Database(_connect(path))
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._flush_interval = flush_interval
        self._frontier = chain.MerkleFrontier()  # owned by the writer thread
        self._heads: dict[str, bytes] = {}  # chain head of each session this process records
        self._outstanding = 0  # writes submitted and not yet committed (flush waits for 0)
        self._outstanding_lock = threading.Lock()
        self._thread = threading.Thread(target=self._write_loop, name="store-writer", daemon=True)
        self._thread.start()
        self._closed = False

    # Writes: queued, committed in batches by the writer thread.
    def submit(self, op: Callable[[sqlite3.Connection], T]) -> Future[T]:
        """Queue a write; the writer thread runs it in its next batch and resolves the future."""
        done: Future[T] = Future()
        with self._outstanding_lock:
            self._outstanding += 1
        self._queue.put((op, done))
        return done

    def append_events(self, events: list[Event]) -> None:
        """Queue events; the writer thread chains them (hashing stays off the event loop)."""
        self.submit(lambda c: self._chain(c, events))

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
        return self.submit(lambda c: (heads.pop if forget else heads.get)(session_id, chain.GENESIS))

    def insert_events(self, events: list[ChainedEvent]) -> None:
        """Insert events exactly as given (hashes included); for tests and imports."""
        rows = [(e.session_id, e.seq, e.ts, e.type, e.data, e.prev_hash, e.hash) for e in events]
        self.submit(lambda c: c.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)", rows))

    def put_session(self, info: SessionInfo) -> None:
        row = _session_row(info)
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        self.submit(lambda c: c.execute(f"INSERT INTO sessions ({columns}) VALUES ({marks})", list(row.values())))

    def update_session(self, session_id: str, **fields: Any) -> None:
        if "extra" in fields:
            fields["extra"] = json.dumps(fields["extra"], sort_keys=True)
        assignments = ", ".join(f"{name} = ?" for name in fields)
        values = [*fields.values(), session_id]
        self.submit(lambda c: c.execute(f"UPDATE sessions SET {assignments} WHERE id = ?", values))

    def log(self, type_: str, **fields: Any) -> Future[None]:
        """Append to the global audit log (logins, refusals, issuances, ...): a leaf of its Merkle tree."""
        text = json.dumps(fields, sort_keys=True, default=str)
        now = time.time()

        def append(c: sqlite3.Connection) -> None:
            # The index is taken inside the write transaction, so several processes share one log.
            seq = c.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM audit_log").fetchone()[0]
            leaf = chain.leaf_hash(chain.audit_entry(seq, now, type_, text))
            c.execute("INSERT INTO audit_log VALUES (?, ?, ?, ?, ?)", (seq, now, type_, text, leaf))

        return self.submit(append)

    def put_seal(self, session_id: str, body: dict[str, Any], signature: str, table: str = "seals") -> None:
        text = chain.canonical_json(body).decode()
        self.submit(lambda c: c.execute(f"INSERT INTO {table} VALUES (?, ?, ?)", (session_id, text, signature)))

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

        return self.submit(write)

    def prune_events(self, session_id: str, tombstone: dict[str, Any], signature: str) -> Future[None]:
        """Replace a sealed session's events with a signed tombstone (retention)."""
        text = chain.canonical_json(tombstone).decode()

        def prune(c: sqlite3.Connection) -> None:
            c.execute("INSERT INTO tombstones VALUES (?, ?, ?)", (session_id, text, signature))
            c.execute("DELETE FROM events WHERE session_id = ?", (session_id,))

        return self.submit(prune)

    def record_certificate(self, row: dict[str, Any]) -> Future[Any]:
        row = {**row, "groups": json.dumps(list(row["groups"])), "principals": json.dumps(list(row["principals"]))}
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        return self.submit(
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
                where, args = "user = ? AND valid_before > ?", [user, now]
            rows = c.execute(
                f"SELECT serial, user FROM certificates WHERE {where} AND revoked_at IS NULL", args
            ).fetchall()
            c.executemany("UPDATE certificates SET revoked_at = ? WHERE serial = ?", [(now, r[0]) for r in rows])
            if user is not None:  # and tokens issued before now will not get the user a new certificate
                c.execute(
                    "INSERT INTO user_revocations (user, revoked_at) VALUES (?, ?) "
                    "ON CONFLICT (user) DO UPDATE SET revoked_at = excluded.revoked_at",
                    [user, now],
                )
            return [{"serial": r[0], "user": r[1], "revoked_at": now} for r in rows]

        return self.submit(revoke)

    def user_revoked_at(self, user: str) -> float | None:
        """When `bastion cert revoke --user` last revoked this user (None: never)."""
        rows = list(self._reader.query("SELECT revoked_at FROM user_revocations WHERE user = ?", [user]))
        return float(rows[0]["revoked_at"]) if rows else None

    def revoked_since(self, since: float) -> list[dict[str, Any]]:
        rows = self._reader.query(
            "SELECT serial, user, revoked_at FROM certificates WHERE revoked_at > ? ORDER BY revoked_at", [since]
        )
        return list(rows)

    def last_event(self, session_id: str) -> tuple[int, bytes, float | None]:
        """(count, last hash, last timestamp) of what was committed for a session."""
        rows = list(
            self._reader.query(
                "SELECT seq, hash, ts FROM events WHERE session_id = ? ORDER BY seq DESC LIMIT 1", [session_id]
            )
        )
        if not rows:
            return 0, chain.GENESIS, None
        return int(rows[0]["seq"]), bytes(rows[0]["hash"]), float(rows[0]["ts"])

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything queued so far, and what its completion queued (seals), is committed."""
        deadline = time.monotonic() + timeout
        while True:
            self.submit(lambda c: None).result(max(0.1, deadline - time.monotonic()))
            with self._outstanding_lock:
                if self._outstanding == 0:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError("the store did not commit within the flush timeout")

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout=10)
        self._writer_conn.close()
        self._reader.conn.close()

    def _write_loop(self) -> None:
        conn = self._writer_conn
        stopping = False
        while not stopping:
            batch = [self._queue.get()]
            deadline = time.monotonic() + self._flush_interval
            while True:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
                if len(batch) >= 5000:
                    break
            stopping = any(item is _STOP for item in batch)
            items = [item for item in batch if item is not _STOP]
            self._commit(conn, items)

    def _commit(
        self, conn: sqlite3.Connection, items: list[tuple[Callable[[sqlite3.Connection], Any], Future[Any]]]
    ) -> None:
        if not items:
            return
        errors: dict[int, BaseException] = {}
        results: dict[int, Any] = {}
        try:
            conn.execute("BEGIN IMMEDIATE")
            for index, (op, _) in enumerate(items):
                try:
                    results[index] = op(conn)
                except Exception as exc:  # one bad write must not lose the rest of the batch
                    errors[index] = exc
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            errors = dict.fromkeys(range(len(items)), exc)
        with self._outstanding_lock:  # before the futures resolve: a flush that wakes sees the truth
            self._outstanding -= len(items)
        for index, (_, done) in enumerate(items):
            if index in errors:
                done.set_exception(errors[index])
            else:
                done.set_result(results.get(index))

    # Reads.
    def sessions(self, live: bool | None = None, limit: int = 1000) -> list[SessionInfo]:
        where, args = ("", []) if live is None else ("WHERE status = ?" if live else "WHERE status != ?", ["live"])
        rows = self._reader.query(f"SELECT * FROM sessions {where} ORDER BY started_at DESC LIMIT {int(limit)}", args)
        return [_session_from_row(r) for r in rows]

    def session(self, session_id: str) -> SessionInfo | None:
        rows = list(self._reader.query("SELECT * FROM sessions WHERE id = ?", [session_id]))
        if not rows:
            rows = list(self._reader.query("SELECT * FROM sessions WHERE id LIKE ? LIMIT 2", [session_id + "%"]))
            if len(rows) != 1:
                return None
        return _session_from_row(rows[0])

    def events(self, session_id: str) -> Iterator[ChainedEvent]:
        for row in self._reader.query("SELECT * FROM events WHERE session_id = ? ORDER BY seq", [session_id]):
            yield ChainedEvent(
                row["session_id"],
                row["seq"],
                row["ts"],
                row["type"],
                bytes(row["data"] or b""),
                bytes(row["prev_hash"]),
                bytes(row["hash"]),
            )

    def seal(self, session_id: str, table: str = "seals") -> tuple[dict[str, Any], str] | None:
        rows = list(self._reader.query(f"SELECT body, signature FROM {table} WHERE session_id = ?", [session_id]))
        return (json.loads(rows[0]["body"]), rows[0]["signature"]) if rows else None

    def audit_entries(self) -> Iterator[dict[str, Any]]:
        for row in self._reader.query("SELECT * FROM audit_log ORDER BY seq"):
            yield {**row, "leaf_hash": bytes(row["leaf_hash"])}

    def checkpoints(self) -> list[dict[str, Any]]:
        return [{**r, "root": bytes(r["root"])} for r in self._reader.query("SELECT * FROM checkpoints ORDER BY size")]

    def session_ids(self) -> list[str]:
        return [r["id"] for r in self._reader.query("SELECT id FROM sessions ORDER BY started_at")]

    def audit_log(self, type_: str | None = None) -> list[dict[str, Any]]:
        where, args = ("WHERE type = ?", [type_]) if type_ else ("", [])
        rows = self._reader.query(f"SELECT * FROM audit_log {where} ORDER BY seq", args)
        return [{**r, "fields": json.loads(r["fields"])} for r in rows]

    def certificate(self, serial: int) -> dict[str, Any] | None:
        rows = list(self._reader.query("SELECT * FROM certificates WHERE serial = ?", [serial]))
        if not rows:
            return None
        row = rows[0]
        return {**row, "groups": tuple(json.loads(row["groups"])), "principals": tuple(json.loads(row["principals"]))}
