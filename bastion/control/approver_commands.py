"""The approvers' commands as a function of argv: `bastion approvals ...` on the bastion host and
`ssh bastion approvals list | approve ID | deny ID --reason R` over SSH run the same code.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from typing import Any

from bastion.control.approval_queue import Approvals
from bastion.control.approvals import ApprovalError, ApprovalRequest, who_may_not_decide
from bastion.display import sanitize_for_display

USAGE = (
    "usage: approvals list [--json] [--all] | approve ID [--reason R] | deny ID --reason R\n"
    "  e.g. ssh bastion approvals list; ssh bastion approve 3; ssh bastion deny 3 --reason 'not during the freeze'"
)
LIST_LIMIT = 50


def approvals_command(
    argv: Sequence[str],
    approver: str,
    approver_groups: tuple[str, ...],
    approvals: Approvals,
    *,
    operator: bool = False,
) -> tuple[int, str]:
    """`approvals list [--json] [--all]`, `approve ID [--reason R]`, `deny ID --reason R` -> (status, text).

    The leading word `approvals` is optional. Status 0: done; 1: refused (the text says why in
    one line); 2: not understood (the text shows the usage).
    """
    args = list(argv[1:] if argv and argv[0] == "approvals" else argv)
    if not args:
        args = ["list"]
    verb, rest = args[0], args[1:]
    try:
        options = _options(rest, {"--json": False, "--all": False, "--reason": True})
    except ValueError as exc:
        return 2, f"bastion: {exc}\n{USAGE}"
    if verb == "list" and not options["positional"]:
        return 0, _list(approvals, approver, approver_groups, operator, options)
    if verb in ("approve", "deny") and len(options["positional"]) == 1:
        return _decide(approvals, approver, approver_groups, operator, verb, options)
    if verb in ("help", "--help", "-h"):
        return 0, USAGE
    return 2, f"bastion: expected a command, got {shlex.join(args)!r}\n{USAGE}"


def _options(words: list[str], known: dict[str, bool]) -> dict[str, Any]:
    """Flags (False) and options with a value (True); `--reason=R` works too."""
    found: dict[str, Any] = {"positional": []}
    index = 0
    while index < len(words):
        word = words[index]
        name, equals, value = word.partition("=")
        if known.get(name):
            if not equals:
                if index + 1 >= len(words):
                    raise ValueError(f"{name}: expected a value")
                index += 1
                value = words[index]
            found[name] = value
        elif word in known:
            found[word] = True
        elif word.startswith("-") and word != "-":
            raise ValueError(f"unknown option {word!r}")
        else:
            found["positional"].append(word)
        index += 1
    return found


def _list(approvals: Approvals, approver: str, groups: tuple[str, ...], operator: bool, options: dict[str, Any]) -> str:
    approvals.expire_due()
    requests = approvals.list(pending_only=not options.get("--all"), limit=LIST_LIMIT)
    if not operator:  # an operator sees every request; an approver those they may decide
        requests = [r for r in requests if who_may_not_decide(r, approver, groups, operator=False) is None]
    now = approvals.now()
    if options.get("--json"):
        return json.dumps([r.display(now) for r in requests], indent=2)
    if not requests:
        return "no pending approval requests" if not options.get("--all") else "no approval requests"
    return "\n".join(_format_request(r, now) for r in requests)


def _format_request(request: ApprovalRequest, now: float) -> str:
    shown = request.display(now)
    where = f"{shown['login']}@{shown['host']}" if shown["login"] else shown["host"]
    status = "" if request.status == "pending" else f" [{request.status}]"
    line = (
        f"#{request.id}{status} {shown['requester']} on {where}, rule {request.rule}, "
        f"{shown['approvals']} approvals, waited {_age(shown['waited'])}: {request.kind}: {shown['action']}"
    )
    if shown["reason"]:
        line += f"\n    reason: {shown['reason']}"
    for vote in shown["votes"]:
        verb = "approved" if vote["approve"] else "denied"
        line += f"\n    {verb} by {vote['approver']}" + (f": {vote['reason']}" if vote["reason"] else "")
    return line


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _decide(
    approvals: Approvals, approver: str, groups: tuple[str, ...], operator: bool, verb: str, options: dict[str, Any]
) -> tuple[int, str]:
    text = options["positional"][0].lstrip("#")
    if not text.isdigit():
        return 2, f"bastion: expected a request number such as 3, got {options['positional'][0]!r}\n{USAGE}"
    reason = str(options.get("--reason") or "")
    try:
        request = approvals.decide(approver, groups, int(text), verb == "approve", reason, operator=operator)
    except ApprovalError as exc:
        return 1, f"bastion: {exc}"
    if request.status == "approved":
        return 0, f"request {request.id} approved; {request.requester}'s {request.kind} goes ahead"
    if request.status == "denied":
        return 0, f"request {request.id} denied: {sanitize_for_display(reason)}"
    count, required = len(request.approved_by), request.required
    return 0, f"request {request.id}: approval recorded ({count}/{required}); it needs {required - count} more"
