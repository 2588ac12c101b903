"""Rules -> a Decision (allow, deny or approve) for each thing a person does through the bastion; pure.

Semantics (docs/design/0005-control.md): default deny; every rule that matches is considered; deny beats approve
beats allow; the decision names the rule that made it (the first in file order of the winning
effect) and every rule that matched.

A rule matches when all of its keys match:
* who: `users` and `groups` are alternatives (the listed users, and members of the listed
  groups); globs; `"*"` is anyone. Leaving both out means anyone; giving only `groups` means
  only their members.
* where: `hosts` (names, globs, or `key=value` label matches, `,` joining labels that must all
  match; default `"*"`) and `logins` (globs; default `"*"`).
* what: `shell`, `exec`, `forward`, `mcp_tools`, `mcp_arguments`. A rule with some of them
  matches only actions of those kinds. A rule without any of them matches by its effect: a deny or
  approve rule matches every action; an allow rule matches shells, exec commands and shell lines
  only. Forwards (`Forward`) and MCP tool calls (`McpTool`) are allowed only by an allow rule
  that names them (`forward = [8000]`, `mcp_tools`/`mcp_arguments`), so "may log in and run
  commands" never opens a tunnel to every port on the host (its sshd, the bastion, an IdP).

Reaching a host (`Connect`) is allowed when any allow or approve rule matches who and where,
whatever its "what" (the action decides later), and denied only by deny rules without "what"
(before the login is chosen, only those whose `logins` include "*").
`shell = true` covers opening an interactive shell; in an allow rule without `exec` it also
allows the shell's lines (deny and approve `exec` patterns still apply to them); with `exec` the
lines are held to those patterns. Commands (exec and shell lines) are split into simple commands
(see command_line.py); a deny or approve pattern hits when it matches the whole line or any
command, an allow needs every command covered by some allow pattern, so `ls; rm -rf /` is not
allowed by `exec = ["ls*"]`. An empty shell line runs nothing and is allowed without rules.
Patterns are globs or `re:<regex>`; both must match the whole text (write `.*` / `*` for a prefix).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from bastion.control.actions import (
    Action,
    Connect,
    Decision,
    Exec,
    Forward,
    McpMethod,
    McpTool,
    Shell,
    ShellLine,
    Subject,
    arguments_json,
)
from bastion.control.command_line import CommandLine
from bastion.control.config import OpaqueEffect, Rule
from bastion.control.exec_match import ExecPattern, matches
from bastion.control.opaque import why_opaque
from bastion.control.patterns import host_matcher, matcher, port_range
from bastion.display import sanitize_for_display

__all__ = ["Policy"]

_RANK: dict[str, int] = {"allow": 0, "approve": 1, "deny": 2}
_DEFAULT_MESSAGE = {"deny": "denied by policy", "approve": "needs approval", "allow": ""}
_NAMED_ONLY = (Forward, McpTool, McpMethod)  # actions an allow rule covers only by naming them
OPAQUE_RULE = "(opaque)"  # the name an opaque line's decision gives (no rule may be named so)


class _CompiledRule:
    """A rule with its patterns compiled, and the matching of who, where and what."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.users = [matcher(p) for p in rule.users]
        self.groups = [matcher(p) for p in rule.groups]
        self.hosts = [host_matcher(p) for p in rule.hosts]
        self.logins = [matcher(p) for p in rule.logins]
        self.exec = [matcher(p) for p in rule.exec if isinstance(p, str)]
        self.exec_tables = [p for p in rule.exec if isinstance(p, ExecPattern)]  # options in any order
        self.ports = [port_range(p) for p in rule.forward]
        self.servers = [matcher(p) for p in rule.mcp_servers]
        self.tools = [matcher(p) for p in rule.mcp_tools]
        self.arguments = {name: matcher(p) for name, p in rule.mcp_arguments.items()}
        self.names_mcp = bool(self.servers or self.tools or self.arguments)
        self.has_what = rule.has_what

    def who_and_where(self, subject: Subject, connect: bool) -> bool:
        who = any(m(subject.user) for m in self.users) or any(m(g) for m in self.groups for g in subject.groups)
        if not who or not any(m(subject.host, subject.labels) for m in self.hosts):
            return False
        if subject.login is None and connect:
            # Before the login is chosen: a rule for some logins may let the user in (checked again once
            # it is chosen), but only a deny for every login keeps them out.
            return self.rule.effect != "deny" or "*" in self.rule.logins
        return any(m(subject.login or "") for m in self.logins)

    def hits(self, action: Action, line: CommandLine | None) -> bool:
        """Does this rule cover the action (a command line: any part of it; `_allowing` holds an allow to
        every part)? Without "what", a deny or approve rule covers everything, an allow rule everything
        but forwards and MCP calls, which only a rule naming them allows."""
        if not self.has_what:
            return self.rule.effect != "allow" or not isinstance(action, _NAMED_ONLY)
        if isinstance(action, Shell):
            return self.rule.shell is True
        if line is not None:
            texts = [line.text.strip(), *(c for cmd in line.all_commands for c in cmd.candidates())]
            return any(m(text) for m in self.exec for text in texts) or any(
                matches(table, cmd.words) for table in self.exec_tables for cmd in line.all_commands
            )
        if isinstance(action, Forward):
            return any(low <= action.port <= high for low, high in self.ports)
        if isinstance(action, McpTool):
            return self._mcp(action)
        if isinstance(action, McpMethod):
            return self.names_server(action.server) and (self.rule.effect != "deny" or self.whole_server)
        return False

    def names_server(self, server: str) -> bool:
        """Does this rule speak of MCP calls on this server (by name, or of tools on any server)?"""
        if not self.names_mcp:
            return False
        return not self.servers or any(m(server) for m in self.servers)

    @property
    def whole_server(self) -> bool:
        """A rule with `mcp_servers` alone covers every call on those servers."""
        return bool(self.servers) and not self.tools and not self.arguments

    def covers_all_lines(self, action: Action) -> bool:
        """For allow: does this rule allow every command line of this kind (no "what", or a plain shell)?"""
        if not self.has_what:
            return True  # an allow rule without "what" covers shells and commands (never forwards or MCP)
        return isinstance(action, ShellLine) and self.rule.shell is True and not self.rule.exec

    def covers(self, command_candidates: tuple[str, ...], words: tuple[str, ...] = ()) -> bool:
        """Does an exec pattern allow this command (its texts; its words, for the structured patterns)?"""
        if any(m(text) for m in self.exec for text in command_candidates):
            return True
        return bool(words) and any(matches(table, words) for table in self.exec_tables)

    def _mcp(self, action: McpTool, with_arguments: bool = True) -> bool:
        if not self.names_server(action.server):
            return False
        if self.tools and not any(m(action.tool) for m in self.tools):
            return False
        if not with_arguments:
            return True
        for name, argument in self.arguments.items():
            found, value = argument_value(action.arguments, name)
            if not found or not argument(value if isinstance(value, str) else arguments_json(value)):
                return False
        return True

    def denies_tool_whatever_arguments(self, server: str, tool: str) -> bool:
        return self.rule.effect == "deny" and (
            not self.has_what or (not self.arguments and self._mcp(McpTool(tool, {}, server), with_arguments=False))
        )

    def may_let_tool_through(self, server: str, tool: str) -> bool:
        """For allow and approve rules: do they cover this tool for some arguments?"""
        if self.rule.effect == "deny":
            return False
        if not self.has_what:
            return self.rule.effect == "approve"  # an approve rule without "what" holds every call
        return self._mcp(McpTool(tool, {}, server), with_arguments=False)


def argument_value(arguments: Mapping[str, Any], name: str) -> tuple[bool, Any]:
    """An argument by name, or by JSON pointer (RFC 6901: "/options/path", "/paths/0"); (found, value)."""
    if not name.startswith("/"):
        return (True, arguments[name]) if name in arguments else (False, None)
    value: Any = arguments
    for token in name[1:].split("/"):
        key = token.replace("~1", "/").replace("~0", "~")
        if isinstance(value, Mapping) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return False, None
    return True, value


class Policy:
    """The one policy evaluator: every path (connect, shell, exec, shell lines, forwards, MCP) asks it.

    `opaque` is what happens to a command line whose programs cannot be told from its text (opaque.py)
    where a deny or approve rule applies to the user and host, instead of an allow: "approve" (held for
    approval where approvers exist for the host, else denied), "deny", or "allow" (decided as any line).
    """

    def __init__(
        self, rules: Sequence[Rule], opaque: OpaqueEffect = "approve", approver_groups: Sequence[str] = ()
    ) -> None:
        self.opaque = opaque
        self.approver_groups = tuple(approver_groups)
        names = [r.name for r in rules]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate is not None:
            raise ValueError(f"expected unique rule names; {duplicate!r} is declared twice")
        self.rules = tuple(rules)
        self._compiled = [_CompiledRule(r) for r in rules]

    def decide(self, subject: Subject, action: Action) -> Decision:
        if isinstance(action, ShellLine) and not action.command.strip():
            return Decision("allow", None, "an empty line runs nothing")
        connect = isinstance(action, Connect)
        candidates = [c for c in self._compiled if c.who_and_where(subject, connect)]
        if connect:
            return self._connect(candidates)
        if isinstance(action, McpMethod):
            return self._mcp_method(candidates, action)
        line = action.line if isinstance(action, Exec | ShellLine) else None
        winners = [c for c in candidates if c.rule.effect != "allow" and c.hits(action, line)]
        allowing, uncovered = self._allowing(candidates, action, line)
        decision = self._decision(winners + allowing, uncovered, action)
        if line is not None and decision.allowed and self.opaque != "allow":
            return self._opaque(decision, candidates, why_opaque(line, interactive=isinstance(action, ShellLine)))
        return decision

    def _opaque(self, allowed: Decision, candidates: list[_CompiledRule], reasons: tuple[str, ...]) -> Decision:
        """An allowed line the bastion cannot read: held or denied where deny or approve rules apply here."""
        guarded = [c for c in candidates if c.rule.effect != "allow"]
        if not reasons or not guarded:
            return allowed
        why = "the bastion cannot tell what this runs: " + "; ".join(reasons)
        matched = tuple(dict.fromkeys((*allowed.matched, *(c.rule.name for c in guarded))))
        approvers = tuple(dict.fromkeys(a for c in guarded if c.rule.effect == "approve" for a in c.rule.approvers))
        if self.opaque == "approve" and (approvers or self.approver_groups):
            return Decision("approve", OPAQUE_RULE, why, matched, approvers, 1, None, reasons)
        return Decision("deny", OPAQUE_RULE, why, matched, opaque=reasons)

    def _mcp_method(self, candidates: list[_CompiledRule], action: McpMethod) -> Decision:
        """Other MCP methods pass where an allow or approve rule names the server; a deny rule for the whole
        server (or without "what") stops them."""
        denying = [c for c in candidates if c.rule.effect == "deny" and (not c.has_what or c.hits(action, None))]
        if denying:
            return self._decision(denying, None, action)
        naming = [c for c in candidates if c.rule.effect != "deny" and c.names_server(action.server)]
        if not naming:
            return self._decision([], None, action)
        first = naming[0].rule
        return Decision("allow", first.name, "", tuple(c.rule.name for c in naming))

    def hides_tool(self, subject: Subject, server: str, tool: str) -> bool:
        """Is this tool denied to the subject whatever its arguments (so `tools/list` may leave it out)?"""
        candidates = [c for c in self._compiled if c.who_and_where(subject, connect=False)]
        if any(c.denies_tool_whatever_arguments(server, tool) for c in candidates):
            return True
        return not any(c.may_let_tool_through(server, tool) for c in candidates)

    def unnamed_allows(self, subject: Subject) -> tuple[str, ...]:
        """The allow rules without "what" for this user, host and login: they cover shells and commands,
        never forwards or MCP calls (for `bastion policy test` to say why a forward found no rule)."""
        return tuple(
            c.rule.name
            for c in self._compiled
            if c.rule.effect == "allow" and not c.has_what and c.who_and_where(subject, connect=False)
        )

    def _connect(self, candidates: list[_CompiledRule]) -> Decision:
        deciding = [c for c in candidates if c.rule.effect != "deny" or not c.has_what]
        if any(c.rule.effect == "deny" for c in deciding):
            return self._decision(deciding, None)
        if not deciding:
            return self._decision([], None)
        first = deciding[0].rule  # an approve rule lets the user reach the host; its action waits later
        return Decision("allow", first.name, first.message, tuple(c.rule.name for c in deciding))

    def _allowing(
        self, candidates: list[_CompiledRule], action: Action, line: CommandLine | None
    ) -> tuple[list[_CompiledRule], str | None]:
        """The allow rules that together allow the action, and the first command none of them allows."""
        rules = [c for c in candidates if c.rule.effect == "allow"]
        if line is None:
            return [c for c in rules if c.hits(action, None)], None
        whole = [c for c in rules if c.covers_all_lines(action)]
        partial = [c for c in rules if c.rule.exec and c not in whole]
        if whole:
            return sorted(whole + [c for c in partial if c.hits(action, line)], key=self._compiled.index), None
        if not partial:
            return [], None
        used: list[_CompiledRule] = []
        if not line.commands and not line.text.lstrip().startswith("#"):
            # Assignments only (PROMPT_COMMAND='curl …|sh', PS1='$(…)'): nothing runs now, but it may
            # later; an allow list covers it only when a pattern matches the whole line.
            covering = [c for c in partial if c.covers((line.text.strip(),))]
            return (sorted(covering, key=self._compiled.index), None) if covering else ([], line.text.strip())
        for command in line.commands:
            texts = command.candidates()
            covering = [c for c in partial if c.covers(texts, command.words)]
            if not covering:
                return [], command.program
            used += [c for c in covering if c not in used]
        return sorted(used or partial, key=self._compiled.index), None

    def _decision(self, matched: list[_CompiledRule], uncovered: str | None, action: Action | None = None) -> Decision:
        matched = sorted(matched, key=self._compiled.index)
        names = tuple(c.rule.name for c in matched)
        if not matched:
            return Decision("deny", None, _no_rule(action, uncovered), names)
        top = max(_RANK[c.rule.effect] for c in matched)
        rule = next(c.rule for c in matched if _RANK[c.rule.effect] == top)
        message = rule.message or _DEFAULT_MESSAGE[rule.effect]
        return Decision(rule.effect, rule.name, message, names, rule.approvers, rule.approvals, rule.grant)


def _no_rule(action: Action | None, uncovered: str | None) -> str:
    """Why nothing allowed the action, in one line; forwards and MCP calls say which key would name them."""
    if isinstance(action, Forward):
        return f"no rule allows forwards to port {action.port} here; a rule must name it: forward = [{action.port}]"
    if isinstance(action, McpTool):
        tool = json.dumps(sanitize_for_display(action.tool), ensure_ascii=False)
        return f"no rule allows the MCP tool {tool} here; a rule must name it: mcp_tools = [{tool}]"
    if isinstance(action, McpMethod):
        server = json.dumps(sanitize_for_display(action.server), ensure_ascii=False)
        return f"no rule names the MCP server {server} here; a rule must name it: mcp_servers = [{server}]"
    return f"no rule allows {sanitize_for_display(uncovered)!r} here" if uncovered else "no rule allows this"
