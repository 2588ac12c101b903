"""Approval requests and the rules for deciding them; pure (the queue that stores and waits is approval_queue.py).

Rules: approvers are members of the rule's `approvers` groups (or `[approvals] approver_groups`);
nobody approves or denies their own request; N approvals must come from N different people (the
same person twice counts once: the second is refused); one denial, with a reason, denies; a
request not decided by its expiry is expired, which is a denial. An operator on the bastion host
(`operator=True`, recorded as `operator:<unix user>`) may decide any request but their own.
"""

from __future__ import annotations

import fnmatch
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from bastion.display import sanitize_for_display

__all__ = [
    "OPERATOR_PREFIX",
    "ApprovalError",
    "ApprovalRequest",
    "Status",
    "Vote",
    "refusal",
    "status_after",
    "who_may_not_decide",
]

Status = Literal["pending", "approved", "denied", "expired", "withdrawn"]
OPERATOR_PREFIX = "operator:"


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


def who_may_not_decide(request: ApprovalRequest, approver: str, groups: tuple[str, ...], operator: bool) -> str | None:
    """Why this person may not decide this request at all (their own, or not an approver), or None."""
    rid = request.id
    if request.requester in (approver, approver.removeprefix(OPERATOR_PREFIX)):
        return f"nobody approves or denies their own request; request {rid} is {request.requester}'s"
    if not operator and not any(fnmatch.fnmatchcase(g, pattern) for g in groups for pattern in request.approvers):
        return f"{approver} may not decide request {rid}: approvers are members of {', '.join(request.approvers)}"
    return None


def refusal(request: ApprovalRequest, vote: Vote, groups: tuple[str, ...], operator: bool) -> str | None:
    """Why this vote may not count, or None."""
    rid = request.id
    if request.status != "pending":
        return f"request {rid} is already {request.status}"
    refused = who_may_not_decide(request, vote.approver, groups, operator)
    if refused is not None:
        return refused
    if not vote.approve and not vote.reason:
        return f"a denial needs a reason: deny {rid} --reason '...'"
    person = vote.approver.removeprefix(OPERATOR_PREFIX)
    if any(v.approver.removeprefix(OPERATOR_PREFIX) == person for v in request.votes):
        missing = request.required - len(request.approved_by)
        return f"{vote.approver} has already approved request {rid}; it needs {missing} more from other people"
    return None


def status_after(request: ApprovalRequest, vote: Vote) -> Status:
    """A pending request's status once this (admissible) vote counts."""
    if not vote.approve:
        return "denied"
    return "approved" if len(request.approved_by) + 1 >= request.required else "pending"
