"""`bastion policy test`: what the rules decide for a user, host, login and action, and which rules matched.

(`bastion approvals` is in approvals.py.)
"""

from __future__ import annotations

import json
from typing import Any

import click

from bastion import config as config_mod
from bastion.cli.support import config_option, fail
from bastion.control.actions import (
    Action,
    Connect,
    Exec,
    Forward,
    McpTool,
    Shell,
    ShellLine,
    Subject,
    action_kind,
    action_text,
)
from bastion.control.policy import Policy


# bastion policy test
def policy_test_report(policy: Policy, subject: Subject, action: Action) -> dict[str, Any]:
    """What `policy test` shows: the decision, the rule that made it and every rule that matched."""
    decision = policy.decide(subject, action)
    unnamed = policy.unnamed_allows(subject) if isinstance(action, Forward | McpTool) and not decision.matched else ()
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
        "unnamed_allows": list(unnamed),  # allow rules here without "what": shells and commands only
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
    text = f"{line}\nmatched: {matched}"
    unnamed = report["unnamed_allows"]
    if unnamed:  # why a forward or MCP call found no rule although the user may log in here
        kind = "forwards" if report["action"]["kind"] == "forward" else "MCP tool calls"
        who = f"rule {unnamed[0]} has" if len(unnamed) == 1 else f"rules {', '.join(unnamed)} have"
        text += f'\nnote: {who} no "what" keys: an allow without them covers shells and commands, never {kind}'
    return text


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
@click.option("--mcp-server", default=None, help="The declared MCP server ([[hosts.mcp]] name) of --mcp-tool.")
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
    mcp_server: str | None,
    mcp_tool: str | None,
    arguments: str | None,
    as_json: bool,
) -> None:
    """Print the decision for one action and the rules that matched, e.g.

    bastion policy test --user alice --group ops --host mcp-host --login mcp --exec 'rm -rf /tmp/x'
    bastion policy test --user alice --host mcp-host --login mcp --mcp-server files --mcp-tool delete_file
    """
    action = _action(connect, shell, command, shell_line, port, mcp_tool, arguments, mcp_server)
    if login is None and not isinstance(action, Connect):
        fail("--login: expected the login on the host, e.g. --login mcp")
    target = settings.host(host)
    if target is None:
        known = ", ".join(h.name for h in settings.hosts) or "none"
        fail(f"--host: {host!r} is not in [[hosts]] (known: {known}); the bastion refuses other hosts")
    try:
        rules = Policy(settings.rules, settings.policy.opaque, settings.approvals.approver_groups)
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
    mcp_server: str | None = None,
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
        chosen.append(McpTool(mcp_tool, _arguments(arguments), mcp_server or ""))
    elif arguments is not None or mcp_server is not None:
        fail("--arguments and --mcp-server: only with --mcp-tool NAME")
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
