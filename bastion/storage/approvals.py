"""The approval tables: requests, votes and grant windows, in the store's database.

`ApprovalTables` wraps the writer's connection inside one transaction (`Store.approvals_write`), so a
read-check-write such as "N approvals from different people" is atomic between processes. Reads for
listing and waiting go through the store's reader (`Store.approval`, `Store.approval_requests`).
Plain SQL with `?` parameters only, portable to PostgreSQL's drivers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from bastion.control.approvals import ApprovalRequest, Status, Vote

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS approval_requests (
        id INTEGER PRIMARY KEY, requester TEXT NOT NULL, groups TEXT NOT NULL, source TEXT NOT NULL,
        host TEXT NOT NULL, login TEXT, kind TEXT NOT NULL, action TEXT NOT NULL, action_key TEXT NOT NULL,
        rule TEXT NOT NULL, required INTEGER NOT NULL, approvers TEXT NOT NULL, grant_seconds REAL,
        reason TEXT NOT NULL, created REAL NOT NULL, expires REAL NOT NULL, status TEXT NOT NULL, decided REAL)""",
    """CREATE TABLE IF NOT EXISTS approval_votes (
        request_id INTEGER NOT NULL, approver TEXT NOT NULL, approve INTEGER NOT NULL, reason TEXT NOT NULL,
        ts REAL NOT NULL, PRIMARY KEY (request_id, approver))""",
    """CREATE TABLE IF NOT EXISTS approval_grants (
        "user" TEXT NOT NULL, host TEXT NOT NULL, login TEXT NOT NULL, action_key TEXT NOT NULL,
        until REAL NOT NULL, request_id INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS approval_requests_status ON approval_requests (status)",
    'CREATE INDEX IF NOT EXISTS approval_grants_key ON approval_grants ("user", host, action_key)',
]
SEP = "\x1f"  # joins group names in one column (names never contain it)


class Connection(Protocol):
    """What the tables need of a DB-API connection (sqlite3's, or a PostgreSQL driver's)."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Any: ...


class ApprovalTables:
    """Approval requests, votes and grants on one connection, inside the caller's transaction."""

    def __init__(self, conn: Connection) -> None:
        self._c = conn

    def insert(self, row: dict[str, Any]) -> int:
        """A new pending request; its id is taken inside the transaction, so processes share one counter."""
        c = self._c
        request_id = int(c.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM approval_requests").fetchone()[0])
        values = {**row, "groups": SEP.join(row["groups"]), "approvers": SEP.join(row["approvers"])}
        columns = ", ".join(["id", *values])
        marks = ", ".join("?" for _ in range(len(values) + 1))
        c.execute(f"INSERT INTO approval_requests ({columns}) VALUES ({marks})", [request_id, *values.values()])
        return request_id

    def load(self, request_id: int) -> ApprovalRequest | None:
        return load(self._c, request_id)

    def add_vote(self, request_id: int, vote: Vote) -> None:
        self._c.execute(
            "INSERT INTO approval_votes VALUES (?, ?, ?, ?, ?)",
            (request_id, vote.approver, int(vote.approve), vote.reason, vote.at),
        )

    def set_status(self, request_id: int, status: Status, at: float) -> None:
        """Decide a request that is still pending (a decided one keeps its status)."""
        self._c.execute(
            "UPDATE approval_requests SET status = ?, decided = ? WHERE id = ? AND status = 'pending'",
            (status, at, request_id),
        )

    def add_grant(self, request: ApprovalRequest, until: float) -> None:
        grant = (request.requester, request.host, request.login or "", request.action_key, until, request.id)
        self._c.execute("INSERT INTO approval_grants VALUES (?, ?, ?, ?, ?, ?)", grant)

    def due(self, now: float, request_id: int | None = None) -> list[int]:
        """Pending requests whose expiry has come (only `request_id`, if given), oldest first."""
        where, args = "status = 'pending' AND expires <= ?", [now]
        if request_id is not None:
            where, args = where + " AND id = ?", [now, request_id]
        return [int(r[0]) for r in self._c.execute(f"SELECT id FROM approval_requests WHERE {where} ORDER BY id", args)]


def load(c: Connection, request_id: int) -> ApprovalRequest | None:
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
        groups=tuple(row["groups"].split(SEP)) if row["groups"] else (),
        source=row["source"],
        host=row["host"],
        login=row["login"],
        kind=row["kind"],
        action=row["action"],
        action_key=row["action_key"],
        rule=row["rule"],
        required=row["required"],
        approvers=tuple(row["approvers"].split(SEP)),
        grant=row["grant_seconds"],
        reason=row["reason"],
        created=row["created"],
        expires=row["expires"],
        status=row["status"],
        decided=row["decided"],
        votes=votes,
    )


def request_ids(c: Connection, pending_only: bool, now: float, limit: int) -> list[int]:
    """Requests, oldest pending first; or every request, newest first."""
    if pending_only:
        where, order, args = "WHERE status = 'pending' AND expires > ?", "id", [now]
    else:
        where, order, args = "", "id DESC", []
    query = f"SELECT id FROM approval_requests {where} ORDER BY {order} LIMIT {int(limit)}"
    return [int(row[0]) for row in c.execute(query, args).fetchall()]


def grant_active(c: Connection, user: str, host: str, login: str, key: str, now: float) -> bool:
    query = (
        'SELECT 1 FROM approval_grants WHERE "user" = ? AND host = ? AND login = ? AND action_key = ? '
        "AND until > ? LIMIT 1"
    )
    return c.execute(query, (user, host, login, key, now)).fetchone() is not None
