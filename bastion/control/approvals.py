"""Approval requests: an action held by an approve rule waits here until people decide, or it expires.

Requests live in the store's database, so the TUI and the CLI (other processes) see and decide
them; a waiter polls its own read-only connection every 0.25 s and is also woken at once by
decisions taken in its own process. Writes go through the store's writer (one transaction each,
which makes "N approvals from different people" safe between processes). Every change is in the
audit log as approval.create / approve / deny / expire / withdraw.

Rules: approvers are members of the rule's `approvers` groups (or `[approvals] approver_groups`);
nobody approves or denies their own request; N approvals must come from N different people (the
same person twice counts once: the second is refused); one denial, with a reason, denies; a
request not decided by its expiry is expired, which is a denial. An operator on the bastion host
(`operator=True`, recorded as `operator:<unix user>`) may decide any request but their own.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import fnmatch
import hashlib
import hmac
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bastion.config_types import Duration, Section
from bastion.control.policy import Action, Decision, Subject, action_key, action_kind, action_text
from bastion.display import sanitize_for_display
from bastion.storage.store import Store

__all__ = ["ApprovalError", "ApprovalRequest", "ApprovalSettings", "Approvals", "Vote"]

Status = Literal["pending", "approved", "denied", "expired", "withdrawn"]
POLL_INTERVAL = 0.25
OPERATOR_PREFIX = "operator:"

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS approval_requests (
        id INTEGER PRIMARY KEY, requester TEXT NOT NULL, groups TEXT NOT NULL, source TEXT NOT NULL,
        host TEXT NOT NULL, login TEXT, kind TEXT NOT NULL, action TEXT NOT NULL, action_key TEXT NOT NULL,
        rule TEXT NOT NULL, required INTEGER NOT NULL, approvers TEXT NOT NULL, grant_seconds REAL,
        reason TEXT NOT NULL, created REAL NOT NULL, expires REAL NOT NULL, status TEXT NOT NULL, decided REAL)""",
    """CREATE TABLE IF NOT EXISTS approval_votes (
        request_id INTEGER NOT NULL, approver TEXT NOT NULL, approve INTEGER NOT NULL, reason TEXT NOT NULL,
        ts REAL NOT NULL, PRIMARY KEY (request_id, approver))""",
    """CREATE TABLE IF NOT EXISTS approval_grants (
        user TEXT NOT NULL, host TEXT NOT NULL, login TEXT NOT NULL, action_key TEXT NOT NULL,
        until REAL NOT NULL, request_id INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS approval_requests_status ON approval_requests (status)",
    "CREATE INDEX IF NOT EXISTS approval_grants_key ON approval_grants (user, host, action_key)",
]
_SEP = "\x1f"  # joins group names in one column (names never contain it)


class ApprovalSettings(Section):
    """The `[approvals]` table."""

    timeout: Duration = 600.0
    approver_groups: tuple[str, ...] = ()


class ApprovalError(Exception):
    """A refused decision or an unknown request; the message is one line for the person who tried."""


@dataclass(frozen=True)
class Vote:
    """One person's decision on a request."""

    approver: str
    approve: bool
    reason: str
    at: float


@dataclass(frozen=True)
class ApprovalRequest:
    """A held action: who wants to do what where, under which rule, and what people decided."""

    id: int
    requester: str
    groups: tuple[str, ...]
    source: str  # the requester's connection or session id
    host: str
    login: str | None
    kind: str  # connect, shell, exec, shell_line, forward, mcp_tool
    action: str  # the command, "port 8000", or "tool {json arguments}" (raw: use display())
    action_key: str
    rule: str
    required: int
    approvers: tuple[str, ...]  # groups whose members may decide
    grant: float | None
    reason: str
    created: float
    expires: float
    status: Status
    decided: float | None = None
    votes: tuple[Vote, ...] = field(default=())

    @property
    def approved_by(self) -> tuple[str, ...]:
        return tuple(v.approver for v in self.votes if v.approve)

    @property
    def approved(self) -> bool:
        return self.status == "approved"

    def display(self, now: float | None = None) -> dict[str, Any]:
        """The request as JSON-ready values, every text a requester chose made safe for a terminal."""
        now = time.time() if now is None else now
        clean = sanitize_for_display
        return {
            "id": self.id,
            "status": self.status,
            "requester": clean(self.requester),
            "groups": [clean(g) for g in self.groups],
            "host": clean(self.host),
            "login": clean(self.login) if self.login else None,
            "kind": self.kind,
            "action": clean(self.action),
            "rule": self.rule,
            "approvals": f"{len(self.approved_by)}/{self.required}",
            "approvers": list(self.approvers),
            "reason": clean(self.reason),
            "created": self.created,
            "expires": self.expires,
            "waited": round((self.decided or now) - self.created, 1),
            "votes": [
                {"approver": clean(v.approver), "approve": v.approve, "reason": clean(v.reason), "at": v.at}
                for v in self.votes
            ],
        }


@dataclass
class _Change:
    """What a write did: the request after it, audit-log entries to append, or why it was refused."""

    request: ApprovalRequest | None
    logs: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    error: str | None = None


class Approvals:
    """Approval requests in the store: create, decide, wait, withdraw, expire, and grant windows."""

    def __init__(
        self,
        store: Store,
        settings: ApprovalSettings | None = None,
        clock: Callable[[], float] = time.time,
        grant_secret: bytes | None = None,
    ) -> None:
        self.store = store
        self.settings = settings or ApprovalSettings()
        self._clock = clock
        # loaded when first needed (`bastion serve` passes it): approvers' commands never hash an action
        self._grant_secret = grant_secret
        store.submit(_create_tables).result()
        uri = store.path.resolve().as_uri() + "?mode=ro"
        self._reader = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None, timeout=10.0)
        self._reader_lock = threading.Lock()
        self._waiters: dict[int, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        self._waiters_lock = threading.Lock()

    def close(self) -> None:
        self._reader.close()

    def _grant_key(self, action: Action) -> str:
        """A grant's key: a keyed hash of the action as typed. The typed text may hold secrets, so it is not
        stored, and the hash is keyed so that a short secret cannot be found by hashing guesses."""
        if self._grant_secret is None:
            self._grant_secret = load_grant_secret(self.store.path.parent)
        digest = hmac.new(self._grant_secret, action_key(action).encode(), hashlib.sha256).hexdigest()
        return "hmac-sha256:" + digest

    # Writes.
    def create(
        self,
        subject: Subject,
        action: Action,
        decision: Decision,
        *,
        source: str = "",
        reason: str = "",
        key_action: Action | None = None,
    ) -> ApprovalRequest:
        """Hold an action that policy sent for approval; the request's id is what people approve.

        `action` is what approvers see (masked); `key_action`, if given, is the action as typed, whose
        hash keys a grant window, so two commands that mask alike are still different actions.
        """
        return self._finish(self._create(subject, action, decision, source, reason, key_action).result())

    async def create_async(
        self,
        subject: Subject,
        action: Action,
        decision: Decision,
        *,
        source: str = "",
        reason: str = "",
        key_action: Action | None = None,
    ) -> ApprovalRequest:
        future = self._create(subject, action, decision, source, reason, key_action)
        return self._finish(await asyncio.wrap_future(future))

    def decide(
        self,
        approver: str,
        approver_groups: Sequence[str],
        request_id: int,
        approve: bool,
        reason: str = "",
        *,
        operator: bool = False,
    ) -> ApprovalRequest:
        """Record one person's decision; raises ApprovalError with a one-line reason when refused."""
        vote = Vote(approver, approve, reason.strip(), 0.0)
        future = self._submit(lambda c: self._decide(c, request_id, vote, tuple(approver_groups), operator))
        return self._finish(future.result())

    def withdraw(self, request_id: int, why: str = "requester disconnected") -> None:
        """Withdraw a pending request (its requester went away); queued, safe to call from the event loop."""
        self._submit(lambda c: self._withdraw(c, request_id, why))

    def expire_due(self) -> builtins.list[int]:
        """Mark every pending request past its expiry as expired; returns their ids."""
        change = self._submit(lambda c: self._expire(c, None)).result()
        return [int(entry[1]["id"]) for entry in change.logs]

    # Reads.
    def now(self) -> float:
        """The clock requests are timed by."""
        return self._clock()

    def get(self, request_id: int) -> ApprovalRequest | None:
        with self._reader_lock:
            return _load(self._reader, request_id)

    def list(self, pending_only: bool = True, limit: int = 200) -> builtins.list[ApprovalRequest]:
        """Requests, oldest pending first; or every request, newest first."""
        if pending_only:
            where, order, args = "WHERE status = 'pending' AND expires > ?", "id", [self._clock()]
        else:
            where, order, args = "", "id DESC", []
        query = f"SELECT id FROM approval_requests {where} ORDER BY {order} LIMIT {int(limit)}"
        with self._reader_lock:
            found = [_load(self._reader, row[0]) for row in self._reader.execute(query, args).fetchall()]
        return [r for r in found if r is not None]

    def granted(self, subject: Subject, action: Action) -> bool:
        """Whether an approval with a grant window still covers this action for this user on this host."""
        query = (
            "SELECT 1 FROM approval_grants WHERE user = ? AND host = ? AND login = ? AND action_key = ? "
            "AND until > ? LIMIT 1"
        )
        args = (subject.user, subject.host, subject.login or "", self._grant_key(action), self._clock())
        with self._reader_lock:
            return self._reader.execute(query, args).fetchone() is not None

    async def wait(self, request_id: int) -> ApprovalRequest:
        """Wait until the request is decided, expires or is withdrawn; wakes within POLL_INTERVAL of it."""
        event = asyncio.Event()
        waiter = (asyncio.get_running_loop(), event)
        with self._waiters_lock:
            self._waiters.setdefault(request_id, set()).add(waiter)
        try:
            while True:
                event.clear()  # before reading: a decision committed after this read sets it again
                request = self.get(request_id)
                if request is None:
                    raise ApprovalError(f"no approval request {request_id}")
                if request.status != "pending":
                    return request
                remaining = request.expires - self._clock()
                if remaining <= 0:
                    future = self._submit(lambda c: self._expire(c, request_id))
                    await asyncio.wrap_future(future)
                    continue
                with contextlib.suppress(TimeoutError):  # a poll: another process may have decided
                    await asyncio.wait_for(event.wait(), min(POLL_INTERVAL, remaining))
        finally:
            with self._waiters_lock:
                self._waiters[request_id].discard(waiter)
                if not self._waiters[request_id]:
                    del self._waiters[request_id]

    # The writer side: each operation runs in one store transaction.
    def _submit(self, op: Callable[[sqlite3.Connection], _Change]) -> Future[_Change]:
        future = self.store.submit(op)
        future.add_done_callback(self._after)
        return future

    def _after(self, future: Future[_Change]) -> None:
        """After commit (in the writer thread): audit-log entries, then wake this process's waiters."""
        if future.exception() is not None:
            return
        change = future.result()
        for type_, fields in change.logs:
            self.store.log(type_, **fields)
        ids = {int(fields["id"]) for _, fields in change.logs}
        for request_id in ids | ({change.request.id} if change.request else set()):
            self._notify(request_id)

    def _notify(self, request_id: int) -> None:
        with self._waiters_lock:
            waiters = builtins.list(self._waiters.get(request_id, ()))
        for loop, event in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)

    @staticmethod
    def _finish(change: _Change) -> ApprovalRequest:
        if change.error is not None:
            raise ApprovalError(change.error)
        assert change.request is not None
        return change.request

    def _create(
        self,
        subject: Subject,
        action: Action,
        decision: Decision,
        source: str,
        reason: str,
        key_action: Action | None = None,
    ) -> Future[_Change]:
        if decision.effect != "approve" or decision.rule is None:
            raise ValueError(f"only an approve decision is held for approval, got {decision.effect}")
        approvers = decision.approvers or self.settings.approver_groups
        if not approvers:
            raise ApprovalError(f"rule {decision.rule} has no approvers and [approvals] approver_groups is empty")
        now = self._clock()
        row = {
            "requester": subject.user,
            "groups": _SEP.join(subject.groups),
            "source": source,
            "host": subject.host,
            "login": subject.login,
            "kind": action_kind(action),
            "action": action_text(action),
            "action_key": self._grant_key(key_action or action),
            "rule": decision.rule,
            "required": decision.approvals,
            "approvers": _SEP.join(approvers),
            "grant_seconds": decision.grant,
            "reason": reason.strip(),
            "created": now,
            "expires": now + self.settings.timeout,
            "status": "pending",
        }
        return self._submit(lambda c: _insert_request(c, row))

    def _decide(
        self, c: sqlite3.Connection, request_id: int, vote: Vote, groups: tuple[str, ...], operator: bool
    ) -> _Change:
        request = _load(c, request_id)
        if request is None:
            return _Change(None, error=f"no approval request {request_id}; see: approvals list")
        now = self._clock()
        if request.status == "pending" and now >= request.expires:
            change = self._expire(c, request_id)
            change.error = f"request {request_id} expired before it was decided"
            return change
        refusal = _refusal(request, vote, groups, operator)
        if refusal is not None:
            return _Change(request, error=refusal)
        c.execute(
            "INSERT INTO approval_votes VALUES (?, ?, ?, ?, ?)",
            (request_id, vote.approver, int(vote.approve), vote.reason, now),
        )
        status: Status = "pending"
        if not vote.approve:
            status = "denied"
        elif len(request.approved_by) + 1 >= request.required:
            status = "approved"
        if status != "pending":
            c.execute("UPDATE approval_requests SET status = ?, decided = ? WHERE id = ?", (status, now, request_id))
        if status == "approved" and request.grant:
            grant = (request.requester, request.host, request.login or "", request.action_key, now + request.grant)
            c.execute("INSERT INTO approval_grants VALUES (?, ?, ?, ?, ?, ?)", (*grant, request_id))
        fields = {"id": request_id, "approver": vote.approver, "reason": vote.reason, "status": status}
        return _Change(_load(c, request_id), [("approval.approve" if vote.approve else "approval.deny", fields)])

    def _withdraw(self, c: sqlite3.Connection, request_id: int, why: str) -> _Change:
        request = _load(c, request_id)
        if request is None or request.status != "pending":
            return _Change(request)
        c.execute(
            "UPDATE approval_requests SET status = 'withdrawn', decided = ? WHERE id = ? AND status = 'pending'",
            (self._clock(), request_id),
        )
        return _Change(_load(c, request_id), [("approval.withdraw", {"id": request_id, "why": why})])

    def _expire(self, c: sqlite3.Connection, request_id: int | None) -> _Change:
        now = self._clock()
        where, args = "status = 'pending' AND expires <= ?", [now]
        if request_id is not None:
            where, args = where + " AND id = ?", [now, request_id]
        ids = [r[0] for r in c.execute(f"SELECT id FROM approval_requests WHERE {where} ORDER BY id", args)]
        for expired in ids:
            c.execute("UPDATE approval_requests SET status = 'expired', decided = ? WHERE id = ?", (now, expired))
        logs = [("approval.expire", {"id": i}) for i in ids]
        return _Change(_load(c, request_id) if request_id is not None else None, logs)


def _create_tables(c: sqlite3.Connection) -> None:
    for statement in _SCHEMA:
        c.execute(statement)


def _insert_request(c: sqlite3.Connection, row: dict[str, Any]) -> _Change:
    # The id is taken inside the write transaction, so several processes share one counter.
    request_id = c.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM approval_requests").fetchone()[0]
    columns = ", ".join(["id", *row])
    marks = ", ".join("?" for _ in range(len(row) + 1))
    c.execute(f"INSERT INTO approval_requests ({columns}) VALUES ({marks})", [request_id, *row.values()])
    fields = {k: v for k, v in row.items() if k not in ("action_key", "status", "created")}
    fields["groups"] = row["groups"].split(_SEP) if row["groups"] else []
    fields["approvers"] = row["approvers"].split(_SEP)
    return _Change(_load(c, request_id), [("approval.create", {"id": request_id, **fields})])


GRANT_SECRET_FILE = "grant.key"


def load_grant_secret(directory: Path) -> bytes:
    """The key that grant windows are hashed with: 32 random bytes in a 0600 file in `directory` (the state
    directory), made on first use (written aside, then linked into place, so two processes agree on one)."""
    path = directory / GRANT_SECRET_FILE
    if not path.exists():
        aside = directory / f".{GRANT_SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(secrets.token_bytes(32))
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)
        aside.unlink()
    if path.stat().st_mode & 0o077:
        raise ApprovalError(f"{path}: the key is readable by others; run chmod 600 {path}")
    secret = path.read_bytes()
    if len(secret) != 32:
        raise ApprovalError(f"{path}: expected a 32-byte key; remove the file to have a new one made")
    return secret


def _refusal(request: ApprovalRequest, vote: Vote, groups: tuple[str, ...], operator: bool) -> str | None:
    """Why this vote may not count, or None."""
    rid = request.id
    if request.status != "pending":
        return f"request {rid} is already {request.status}"
    if request.requester in (vote.approver, vote.approver.removeprefix(OPERATOR_PREFIX)):
        return f"nobody approves or denies their own request; request {rid} is {request.requester}'s"
    if not operator and not any(fnmatch.fnmatchcase(g, pattern) for g in groups for pattern in request.approvers):
        return f"{vote.approver} may not decide request {rid}: approvers are members of {', '.join(request.approvers)}"
    if not vote.approve and not vote.reason:
        return f"a denial needs a reason: deny {rid} --reason '...'"
    person = vote.approver.removeprefix(OPERATOR_PREFIX)
    if any(v.approver.removeprefix(OPERATOR_PREFIX) == person for v in request.votes):
        missing = request.required - len(request.approved_by)
        return f"{vote.approver} has already approved request {rid}; it needs {missing} more from other people"
    return None


def _load(c: sqlite3.Connection, request_id: int) -> ApprovalRequest | None:
    cursor = c.execute("SELECT * FROM approval_requests WHERE id = ?", (request_id,))
    values = cursor.fetchone()
    if values is None:
        return None
    row = dict(zip([d[0] for d in cursor.description], values, strict=True))
    votes = tuple(
        Vote(approver, bool(approve), reason, ts)
        for approver, approve, reason, ts in c.execute(
            "SELECT approver, approve, reason, ts FROM approval_votes WHERE request_id = ? ORDER BY ts", (request_id,)
        )
    )
    return ApprovalRequest(
        id=row["id"],
        requester=row["requester"],
        groups=tuple(row["groups"].split(_SEP)) if row["groups"] else (),
        source=row["source"],
        host=row["host"],
        login=row["login"],
        kind=row["kind"],
        action=row["action"],
        action_key=row["action_key"],
        rule=row["rule"],
        required=row["required"],
        approvers=tuple(row["approvers"].split(_SEP)),
        grant=row["grant_seconds"],
        reason=row["reason"],
        created=row["created"],
        expires=row["expires"],
        status=row["status"],
        decided=row["decided"],
        votes=votes,
    )
