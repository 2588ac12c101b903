"""Deciding one action of a session: policy, grant windows and approvals, with every decision recorded.

The session layers (outer routing, inner login, the session bridge, forwards) ask a Gate; it asks
policy, holds `approve` decisions as approval requests and waits for people, and records the outcome
in the session's recording (event `decision`) and, for anything but a plain allow, in the audit log.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from bastion.audit import events as ev
from bastion.audit.recording import SessionRecording
from bastion.control.actions import Action, Decision, Exec, McpTool, ShellLine, Subject, action_kind, action_text
from bastion.control.approval_queue import Approvals
from bastion.control.approvals import ApprovalError, ApprovalRequest
from bastion.control.policy import Policy
from bastion.display import sanitize_for_display
from bastion.masking.masker import Masker
from bastion.masking.values import mask_json

REASON_ENV = "BASTION_REASON"  # ssh -o SetEnv=BASTION_REASON="..." gives approvers the requester's reason
DENIED_STATUS = 77  # exit status of a denied exec or shell (sysexits EX_NOPERM), documented in the README


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    message: str  # one line for the user when not allowed ("denied by rule NAME: why")
    rule: str | None
    request: int | None = None


def denial(decision: Decision, action: Action) -> str:
    if decision.rule is None:
        return f"denied: {decision.message or 'no rule allows ' + action_kind(action).replace('_', ' ')}"
    return f"denied by rule {decision.rule}: {decision.message}"


class Controls(Protocol):
    """What a gate asks: the policy, the approval queue, the masker, and the audit log (the bastion's context)."""

    @property
    def policy(self) -> Policy: ...

    @property
    def approvals(self) -> Approvals: ...

    @property
    def masker(self) -> Masker | None: ...

    def audit(self, type_: str, **fields: Any) -> None: ...


class Gate:
    """Decides the actions of one subject (user, host, login) for one connection or session, and records them."""

    def __init__(
        self,
        ctx: Controls,
        subject: Subject,
        source: str,
        recording: SessionRecording | None = None,
    ) -> None:
        self.ctx = ctx
        self.subject = subject
        self.source = source
        self.recording = recording

    def _masked(self, decision: Decision) -> Decision:
        """A decision's message may quote what was typed (the uncovered program): masked before it is shown."""
        if self.ctx.masker is None or not decision.message:
            return decision
        return dataclasses.replace(decision, message=self.ctx.masker.mask_text(decision.message))

    def decide(self, action: Action) -> Decision:
        """Policy alone (no waiting): for the places that cannot hold, such as routing."""
        decision = self._masked(self.ctx.policy.decide(self.subject, action))
        self.record(self.shown(action), decision, decision.effect)
        return decision

    def shown(self, action: Action) -> Action:
        """The action as it may be stored and shown to approvers: secrets in it masked."""
        masker = self.ctx.masker
        if masker is None:
            return action
        if isinstance(action, Exec | ShellLine):
            shown = masker.mask_text(action.command)
            if shown != action.command:  # a masked span may hide $(...): name what the line runs
                programs = sorted({c.program for c in action.line.all_commands if c.program})
                shown += f"  [contains masked text; runs: {masker.mask_text(', '.join(programs)) or 'nothing'}]"
            return type(action)(shown)
        if isinstance(action, McpTool):
            return McpTool(action.tool, mask_json(masker, dict(action.arguments)), action.server)
        return action

    def settle(self, action: Action) -> Verdict | None:
        """Policy alone, recorded, when it allows or denies; None when the action must wait for `check`."""
        decision = self._masked(self.ctx.policy.decide(self.subject, action))
        if decision.effect == "approve":
            return None
        shown = self.shown(action)
        self.record(shown, decision, decision.effect)
        return Verdict(decision.allowed, "" if decision.allowed else denial(decision, shown), decision.rule)

    async def check(self, action: Action, waiting: Callable[[str], None], reason: str = "") -> Verdict:
        """Policy, then a grant window or an approval request (announced through `waiting`)."""
        typed = action
        settled = self.settle(typed)
        if settled is not None:
            return settled
        decision = self._masked(self.ctx.policy.decide(self.subject, typed))
        action = self.shown(typed)  # decided on what was typed; stored and shown masked
        key = self.ctx.approvals.key_of(typed)  # the grant key of the action as typed, hashed once
        if await asyncio.to_thread(self.ctx.approvals.granted, self.subject, key):
            self.record(action, decision, "allow", granted=True)
            return Verdict(True, "", decision.rule)
        return await self._hold(action, decision, waiting, reason, key)

    async def _hold(
        self, action: Action, decision: Decision, waiting: Callable[[str], None], reason: str, key: str
    ) -> Verdict:
        if self.ctx.masker is not None:
            reason = self.ctx.masker.mask_text(reason)
        creating = asyncio.ensure_future(
            self.ctx.approvals.create_async(
                self.subject, action, decision, source=self.source, reason=reason, key=key
            )
        )
        try:
            request = await asyncio.shield(creating)  # stored even if the requester leaves meanwhile...
        except asyncio.CancelledError:
            creating.add_done_callback(self._withdraw_when_stored)  # ...and then withdrawn
            raise
        except ApprovalError as exc:
            self.record(action, decision, "deny", reason=str(exc))
            return Verdict(False, f"cannot hold for approval: {exc}", decision.rule)
        self.record(action, decision, "approve", request=request.id)
        waiting(f"waiting for approval (request {request.id}, rule {decision.rule})...")
        try:
            final = await self.ctx.approvals.wait(request.id)
        except asyncio.CancelledError:  # the requester went away
            self.ctx.approvals.withdraw(request.id)
            raise
        if final.status == "approved":
            self._note(ev.APPROVAL, request=request.id, status="approved", by=list(final.approved_by))
            return Verdict(True, "", decision.rule, request.id)
        self._note(ev.APPROVAL, request=request.id, status=final.status, by=[v.approver for v in final.votes])
        if final.status == "denied":
            vote = next((v for v in final.votes if not v.approve), None)
            who = f" by {sanitize_for_display(vote.approver)}: {sanitize_for_display(vote.reason)}" if vote else ""
            return Verdict(False, f"request {request.id} denied{who}", decision.rule, request.id)
        return Verdict(False, f"request {request.id} {final.status}", decision.rule, request.id)

    def _withdraw_when_stored(self, creating: asyncio.Future[ApprovalRequest]) -> None:
        if not creating.cancelled() and creating.exception() is None:
            self.ctx.approvals.withdraw(creating.result().id)

    def refuse(self, action: Action, message: str) -> None:
        """Record a refusal the gate made without asking policy (the line could not be read)."""
        self.record(self.shown(action), Decision("deny", None, message), "deny")

    def record(self, action: Action, decision: Decision, outcome: str, **extra: object) -> None:
        fields = {
            "action": action_kind(action),
            "text": action_text(action),
            "effect": outcome,
            "rule": decision.rule,
            "matched": list(decision.matched),
            "message": decision.message,
            **({"opaque": list(decision.opaque)} if decision.opaque else {}),
            **extra,
        }
        self._note(ev.DECISION, **fields)
        if outcome != "allow" or extra or self.recording is None:  # no recording: the audit log is the record
            self.ctx.audit(
                "policy." + outcome,
                user=self.subject.user,
                host=self.subject.host,
                login=self.subject.login,
                source=self.source,
                session=self.recording.id if self.recording else None,
                **fields,
            )

    def _note(self, type_: str, **fields: object) -> None:
        if self.recording is not None and not self.recording.closed:
            self.recording.note(type_, **fields)
