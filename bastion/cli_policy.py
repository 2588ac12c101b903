"""`bastion policy test` and `bastion approvals`; `approvals_command` also serves `ssh bastion approve 3`.

The operator on the bastion host acts as `operator:<unix user>` and may decide any request but
their own; over SSH an approver acts with their certificate's identity and groups, and sees and
decides only the requests their groups may decide.
"""

from __future__ import annotations

import fnmatch
import getpass
import json
import shlex
import sys
from collections.abc import Sequence
from typing import Any

import click

from bastion import config as config_mod
from bastion.approvals import OPERATOR_PREFIX, ApprovalError, ApprovalRequest, Approvals
from bastion.cli_support import config_option, fail, open_store
from bastion.display import sanitize_for_display
from bastion.policy import (
    Action,
    Connect,
    Exec,
    Forward,
    McpTool,
    Policy,
    Shell,
    ShellLine,
    Subject,
    action_kind,
    action_text,
)

USAGE = (
    "usage: approvals list [--json] [--all] | approve ID [--reason R] | deny ID --reason R\n"
    "  e.g. ssh bastion approvals list; ssh bastion approve 3; ssh bastion deny 3 --reason 'not during the freeze'"
)
_LIST_LIMIT = 50


# bastion policy test
def policy_test_report(policy: Policy, subject: Subject, action: Action) -> dict[str, Any]:
    """What `policy test` shows: the decision, the rule that made it and every rule that matched."""
    decision = policy.decide(subject, action)
    return {
        "effect": decision.effect,
        "rule": decision.rule,
        "message": decision.message,
        "matched": list(decision.matched),
        "approvers": list(decision.approvers),
        "approvals": decision.approvals,
        "grant": decision.grant,
        "user": subject.user,
        "groups": list(subject.groups),
        "host": subject.host,
        "login": subject.login,
        "action": {"kind": action_kind(action), "text": action_text(action)},
    }


def format_policy_report(report: dict[str, Any]) -> str:
    by = f"by rule {report['rule']}" if report["rule"] else "by default (no rule matched)"
    line = f"{report['effect']} {by}"
    if report["message"]:
        line += f": {report['message']}"
    if report["effect"] == "approve":
        who = ", ".join(report["approvers"]) or "[approvals] approver_groups"
        line += f" ({report['approvals']} approval(s) from {who}"
        line += f"; grant {report['grant']:g}s)" if report["grant"] else ")"
    matched = ", ".join(report["matched"]) or "none"
    return f"{line}\nmatched: {matched}"


@click.group()
def policy() -> None:
    """Policy rules: see what a rule set decides before a user meets it."""


@policy.command("test")
@config_option
@click.option("--user", required=True, help="User name, as on the certificate.")
@click.option("--group", "groups", multiple=True, help="Group of the user (repeatable).")
@click.option("--host", required=True, help="Host name from [[hosts]].")
@click.option("--login", default=None, help="Login on the host (not needed with --connect).")
@click.option("--connect", is_flag=True, help="Decide reaching the host.")
@click.option("--shell", is_flag=True, help="Decide opening an interactive shell.")
@click.option("--exec", "command", default=None, help="Decide an exec command line.")
@click.option("--shell-line", default=None, help="Decide a line typed in a shell.")
@click.option("--forward", "port", type=click.IntRange(1, 65535), default=None, help="Decide a forward to a port.")
@click.option("--mcp-tool", default=None, help="Decide an MCP tool call.")
@click.option("--arguments", default=None, help='The MCP tool call\'s arguments as JSON, e.g. \'{"path": "/"}\'.')
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
def policy_test(
    settings: config_mod.Settings,
    user: str,
    groups: tuple[str, ...],
    host: str,
    login: str | None,
    connect: bool,
    shell: bool,
    command: str | None,
    shell_line: str | None,
    port: int | None,
    mcp_tool: str | None,
    arguments: str | None,
    as_json: bool,
) -> None:
    """Print the decision for one action and the rules that matched, e.g.

    bastion policy test --user alice --group ops --host mcp-host --login mcp --exec 'rm -rf /tmp/x'
    """
    action = _action(connect, shell, command, shell_line, port, mcp_tool, arguments)
    if login is None and not isinstance(action, Connect):
        fail("--login: expected the login on the host, e.g. --login mcp")
    target = settings.host(host)
    if target is None:
        known = ", ".join(h.name for h in settings.hosts) or "none"
        fail(f"--host: {host!r} is not in [[hosts]] (known: {known}); the bastion refuses other hosts")
    try:
        rules = Policy(settings.rules)
    except ValueError as exc:
        fail(f"{settings.path}: rules: {exc}")
    report = policy_test_report(rules, Subject(user, groups, host, dict(target.labels), login), action)
    click.echo(json.dumps(report, indent=2) if as_json else format_policy_report(report))


def _action(
    connect: bool,
    shell: bool,
    command: str | None,
    shell_line: str | None,
    port: int | None,
    mcp_tool: str | None,
    arguments: str | None,
) -> Action:
    chosen: list[Action] = []
    if connect:
        chosen.append(Connect())
    if shell:
        chosen.append(Shell())
    if command is not None:
        chosen.append(Exec(command))
    if shell_line is not None:
        chosen.append(ShellLine(shell_line))
    if port is not None:
        chosen.append(Forward(port))
    if mcp_tool is not None:
        chosen.append(McpTool(mcp_tool, _arguments(arguments)))
    elif arguments is not None:
        fail("--arguments: only with --mcp-tool NAME")
    if len(chosen) != 1:
        fail(
            "expected exactly one of --connect, --shell, --exec CMD, --shell-line CMD, --forward PORT, --mcp-tool NAME"
        )
    return chosen[0]


def _arguments(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        fail(f'--arguments: expected a JSON object such as \'{{"path": "/"}}\': {exc}')
    if not isinstance(value, dict):
        fail(f'--arguments: expected a JSON object such as \'{{"path": "/"}}\', got {text}')
    return value


# approvals, as a function of argv so the SSH server can serve it too
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
    requests = approvals.list(pending_only=not options.get("--all"), limit=_LIST_LIMIT)
    if not operator:
        requests = [r for r in requests if _may_decide(r, approver, groups)]
    now = approvals.now()
    if options.get("--json"):
        return json.dumps([r.display(now) for r in requests], indent=2)
    if not requests:
        return "no pending approval requests" if not options.get("--all") else "no approval requests"
    return "\n".join(_format_request(r, now) for r in requests)


def _may_decide(request: ApprovalRequest, approver: str, groups: tuple[str, ...]) -> bool:
    if request.requester == approver:
        return False
    return any(fnmatch.fnmatchcase(g, pattern) for g in groups for pattern in request.approvers)


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


def operator_identity() -> str:
    """How a decision taken on the bastion host is recorded."""
    return OPERATOR_PREFIX + getpass.getuser()


@click.group()
def approvals() -> None:
    """Approval requests: list, approve, deny (as operator:<you> on the bastion host)."""


def _run(settings: config_mod.Settings, argv: list[str]) -> None:
    store = open_store(settings)
    try:
        queue = Approvals(store, settings.approvals)
        try:
            status, text = approvals_command(argv, operator_identity(), (), queue, operator=True)
        finally:
            queue.close()
    finally:
        store.close()
    if status == 0:
        click.echo(text)
    else:
        click.echo(text.splitlines()[0], err=True)
    sys.exit(status)


@approvals.command("list")
@config_option
@click.option("--all", "show_all", is_flag=True, help=f"Also decided and expired requests (the last {_LIST_LIMIT}).")
@click.option("--json", "as_json", is_flag=True, help="Print the requests as JSON.")
def approvals_list(settings: config_mod.Settings, show_all: bool, as_json: bool) -> None:
    """Pending requests, oldest first; then: bastion approvals approve ID."""
    _run(settings, ["list", *(["--all"] if show_all else []), *(["--json"] if as_json else [])])


@approvals.command("approve")
@config_option
@click.argument("request_id", type=int)
@click.option("--reason", default="", help="Why (recorded with the decision).")
def approvals_approve(settings: config_mod.Settings, request_id: int, reason: str) -> None:
    """Approve a request (one of the approvals it needs)."""
    _run(settings, ["approve", str(request_id), "--reason", reason])


@approvals.command("deny")
@config_option
@click.argument("request_id", type=int)
@click.option("--reason", required=True, help="Why (required; the requester sees it).")
def approvals_deny(settings: config_mod.Settings, request_id: int, reason: str) -> None:
    """Deny a request; one denial is enough."""
    _run(settings, ["deny", str(request_id), "--reason", reason])
