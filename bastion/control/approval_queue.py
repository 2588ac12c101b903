"""The approval queue: held actions become requests in the store, wait there until people decide, or expire.

Requests live in the store's database, so the TUI and the CLI (other processes) see and decide
them; a waiter polls the store every POLL_INTERVAL (0.25 s) and is also woken at once by
decisions taken in its own process. Each write is one store transaction (`Store.approvals_write`),
which makes "N approvals from different people" safe between processes. Every change is in the
audit log as approval.create / approve / deny / expire / withdraw. The rules are in approvals.py.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from bastion.control.actions import Action, Decision, Subject, action_kind, action_text
from bastion.control.approvals import ApprovalError, ApprovalRequest, Status, Vote, refusal, status_after
from bastion.control.config import ApprovalSettings
from bastion.control.grant_key import GrantKey
from bastion.storage import Store
from bastion.storage.approvals import ApprovalTables

__all__ = ["POLL_INTERVAL", "Approvals"]

POLL_INTERVAL = 0.25


@dataclass
class _Change:
    """What a write did: the request after it, audit-log entries to append, or why it was refused."""

    request: ApprovalRequest | None
    logs: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    error: str | None = None


class Approvals:
    """Approval requests in the store: create, decide, wait, withdraw, expire, and grant windows.

    `grant_key` hashes the actions that grant windows cover; `bastion serve` passes it. The approvers'
    commands (list, approve, deny) never hash an action, so they run without it.
    """

    def __init__(
        self,
        store: Store,
        settings: ApprovalSettings | None = None,
        clock: Callable[[], float] = time.time,
        grant_key: GrantKey | None = None,
    ) -> None:
        self.store = store
        self.settings = settings or ApprovalSettings()
        self._clock = clock
        self._grant_key = grant_key
        self._waiters: dict[int, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        self._waiters_lock = threading.Lock()

    def key_of(self, action: Action) -> str:
        """The grant key of an action as typed (computed once per decision by the gate)."""
        if self._grant_key is None:
            raise ApprovalError("grant windows need the bastion's grant key; only `bastion serve` holds it")
        return self._grant_key.of(action)

    # Writes.
    def create(
        self,
        subject: Subject,
        action: Action,
        decision: Decision,
        *,
        source: str = "",
        reason: str = "",
        key: str | None = None,
    ) -> ApprovalRequest:
        """Hold an action that policy sent for approval; the request's id is what people approve.

        `action` is what approvers see (masked); `key`, if given, is the grant key of the action as
        typed (`key_of`), so two commands that mask alike are still different actions.
        """
        return self._finish(self._create(subject, action, decision, source, reason, key).result())

    async def create_async(
        self,
        subject: Subject,
        action: Action,
        decision: Decision,
        *,
        source: str = "",
        reason: str = "",
        key: str | None = None,
    ) -> ApprovalRequest:
        future = self._create(subject, action, decision, source, reason, key)
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
        future = self._submit(lambda t: self._decide(t, request_id, vote, tuple(approver_groups), operator))
        return self._finish(future.result())

    def withdraw(self, request_id: int, why: str = "requester disconnected") -> None:
        """Withdraw a pending request (its requester went away); queued, safe to call from the event loop."""
        self._submit(lambda t: self._withdraw(t, request_id, why))

    def expire_due(self) -> builtins.list[int]:
        """Mark every pending request past its expiry as expired; returns their ids."""
        change = self._submit(lambda t: self._expire(t, None)).result()
        return [int(entry[1]["id"]) for entry in change.logs]

    # Reads.
    def now(self) -> float:
        """The clock requests are timed by."""
        return self._clock()

    def get(self, request_id: int) -> ApprovalRequest | None:
        return self.store.approval(request_id)

    def list(self, pending_only: bool = True, limit: int = 200) -> builtins.list[ApprovalRequest]:
        """Requests, oldest pending first; or every request, newest first."""
        return self.store.approval_requests(pending_only, self._clock(), limit)

    def granted(self, subject: Subject, key: str) -> bool:
        """Whether an approval with a grant window still covers the action of this grant key for this user here."""
        return self.store.grant_active(subject.user, subject.host, subject.login or "", key, self._clock())

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
                    future = self._submit(lambda t: self._expire(t, request_id))
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
    def _submit(self, op: Callable[[ApprovalTables], _Change]) -> Future[_Change]:
        future = self.store.approvals_write(op)
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
        self, subject: Subject, action: Action, decision: Decision, source: str, reason: str, key: str | None
    ) -> Future[_Change]:
        if decision.effect != "approve" or decision.rule is None:
            raise ValueError(f"only an approve decision is held for approval, got {decision.effect}")
        approvers = decision.approvers or self.settings.approver_groups
        if not approvers:
            raise ApprovalError(f"rule {decision.rule} has no approvers and [approvals] approver_groups is empty")
        now = self._clock()
        row = {
            "requester": subject.user,
            "groups": subject.groups,
            "source": source,
            "host": subject.host,
            "login": subject.login,
            "kind": action_kind(action),
            "action": action_text(action),
            "action_key": key if key is not None else self.key_of(action),
            "rule": decision.rule,
            "required": decision.approvals,
            "approvers": tuple(approvers),
            "grant_seconds": decision.grant,
            "reason": reason.strip(),
            "created": now,
            "expires": now + self.settings.timeout,
            "status": "pending",
        }
        return self._submit(lambda t: _insert(t, row))

    def _decide(
        self, t: ApprovalTables, request_id: int, vote: Vote, groups: tuple[str, ...], operator: bool
    ) -> _Change:
        request = t.load(request_id)
        if request is None:
            return _refused(None, request_id, vote, f"no approval request {request_id}; see: approvals list")
        now = self._clock()
        if request.status == "pending" and now >= request.expires:
            change = self._expire(t, request_id)
            refused = _refused(change.request, request_id, vote, f"request {request_id} expired before it was decided")
            change.logs += refused.logs
            change.error = refused.error
            return change
        reason = refusal(request, vote, groups, operator)
        if reason is not None:
            return _refused(request, request_id, vote, reason)
        t.add_vote(request_id, Vote(vote.approver, vote.approve, vote.reason, now))
        status: Status = status_after(request, vote)
        if status != "pending":
            t.set_status(request_id, status, now)
        if status == "approved" and request.grant:
            t.add_grant(request, now + request.grant)
        fields = {"id": request_id, "approver": vote.approver, "reason": vote.reason, "status": status}
        return _Change(t.load(request_id), [("approval.approve" if vote.approve else "approval.deny", fields)])

    def _withdraw(self, t: ApprovalTables, request_id: int, why: str) -> _Change:
        request = t.load(request_id)
        if request is None or request.status != "pending":
            return _Change(request)
        t.set_status(request_id, "withdrawn", self._clock())
        return _Change(t.load(request_id), [("approval.withdraw", {"id": request_id, "why": why})])

    def _expire(self, t: ApprovalTables, request_id: int | None) -> _Change:
        now = self._clock()
        ids = t.due(now, request_id)
        for expired in ids:
            t.set_status(expired, "expired", now)
        logs = [("approval.expire", {"id": i}) for i in ids]
        return _Change(t.load(request_id) if request_id is not None else None, logs)


def _refused(request: ApprovalRequest | None, request_id: int, vote: Vote, reason: str) -> _Change:
    """A decision that does not count: refused with a one-line reason, and the attempt is in the audit log."""
    fields = {"id": request_id, "approver": vote.approver, "approve": vote.approve, "reason": reason}
    return _Change(request, [("approval.refused", fields)], error=reason)


def _insert(t: ApprovalTables, row: dict[str, Any]) -> _Change:
    request_id = t.insert(row)
    fields = {k: v for k, v in row.items() if k not in ("action_key", "status", "created")}
    fields["groups"], fields["approvers"] = list(row["groups"]), list(row["approvers"])
    return _Change(t.load(request_id), [("approval.create", {"id": request_id, **fields})])
