"""Rules -> a Decision (allow, deny or approve) for each thing a person does through the bastion; pure.

Semantics (DESIGN §4): default deny; every rule that matches is considered; deny beats approve
beats allow; the decision names the rule that made it (the first in file order of the winning
effect) and every rule that matched.

A rule matches when all of its keys match:
* who: `users` and `groups` are alternatives (the listed users, and members of the listed
  groups); globs; `"*"` is anyone. Leaving both out means anyone; giving only `groups` means
  only their members.
* where: `hosts` (names, globs, or `key=value` label matches, `,` joining labels that must all
  match; default `"*"`) and `logins` (globs; default `"*"`).
* what: `shell`, `exec`, `forward`, `mcp_tools`, `mcp_arguments`. A rule without any of them
  matches every action; one with some matches only actions of those kinds.

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

import fnmatch
import functools
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from bastion.config_types import Duration, Section
from bastion.control.command_line import CommandLine, parse
from bastion.display import sanitize_for_display

__all__ = [
    "Action",
    "Connect",
    "Decision",
    "Exec",
    "Forward",
    "McpTool",
    "Policy",
    "Rule",
    "Shell",
    "ShellLine",
    "Subject",
    "action_key",
    "action_kind",
    "action_text",
    "check_rules",
]

Effect = Literal["allow", "deny", "approve"]
_RANK: dict[str, int] = {"allow": 0, "approve": 1, "deny": 2}
_RULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")
_DEFAULT_MESSAGE = {"deny": "denied by policy", "approve": "needs approval", "allow": ""}
_WHAT_KEYS = ("shell", "exec", "forward", "mcp_tools", "mcp_arguments")


@functools.lru_cache(maxsize=4096)
def _matcher(pattern: str) -> Callable[[str], bool]:
    """A glob or `re:<regex>`, matched against the whole text; raises ValueError in one line."""
    if pattern.startswith("re:"):
        try:
            compiled = re.compile(pattern[3:])
        except re.error as exc:
            raise ValueError(f"expected a valid regular expression after 're:', got {pattern!r}: {exc}") from None
    else:
        compiled = re.compile(fnmatch.translate(pattern))
    return lambda text: compiled.fullmatch(text) is not None


def _patterns(values: tuple[str, ...], what: str) -> tuple[str, ...]:
    for value in values:
        if not value:
            raise ValueError(f"expected {what} patterns such as 'rm *' or 're:^rm\\b.*', got an empty string")
        _matcher(value)
    return values


class Rule(Section):
    """One `[[rules]]` entry: who, where, what, and the effect when all of them match."""

    name: str
    effect: Effect
    users: tuple[str, ...] = ("*",)
    groups: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ("*",)
    logins: tuple[str, ...] = ("*",)
    shell: bool | None = None
    exec: tuple[str, ...] = ()
    forward: tuple[int | str, ...] = ()
    mcp_tools: tuple[str, ...] = ()
    mcp_arguments: dict[str, str] = Field(default_factory=dict)
    approvers: tuple[str, ...] = ()
    approvals: int = 1
    message: str = ""
    grant: Duration | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _RULE_NAME.match(value):
            raise ValueError(f"expected a rule name of letters, digits, '.', '_', ':', '-', got {value!r}")
        return value

    @field_validator("users", "hosts", "logins")
    @classmethod
    def _not_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError('expected at least one entry, or "*" for any (or leave the key out)')
        return _patterns(value, "name")

    @field_validator("groups", "approvers", "mcp_tools")
    @classmethod
    def _globs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _patterns(value, "name")

    @field_validator("exec")
    @classmethod
    def _exec(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _patterns(value, "command")

    @field_validator("mcp_arguments")
    @classmethod
    def _arguments(cls, value: dict[str, str]) -> dict[str, str]:
        _patterns(tuple(value.values()), "argument")
        return value

    @field_validator("shell")
    @classmethod
    def _shell(cls, value: bool | None) -> bool | None:
        if value is False:
            raise ValueError("expected true (the rule covers interactive shells), or leave the key out")
        return value

    @field_validator("forward", mode="before")
    @classmethod
    def _forward(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple):
            return value  # pydantic says "expected a list"
        return tuple(_port_entry(entry) for entry in value)

    @field_validator("approvals")
    @classmethod
    def _approvals(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"expected at least 1 approval, got {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        if self.groups and "users" not in self.model_fields_set:
            object.__setattr__(self, "users", ())  # `groups` alone: only their members
        if self.effect != "approve":
            for key, unset in (("approvers", ()), ("approvals", 1), ("grant", None)):
                if getattr(self, key) != unset:
                    raise ValueError(f'{key} only applies to effect = "approve"; rule {self.name!r} is {self.effect}')
        return self

    @property
    def has_what(self) -> bool:
        return any(getattr(self, key) not in (None, (), {}) for key in _WHAT_KEYS)


def _port_entry(entry: Any) -> int | str:
    """8000, "8000", "8000-8100" or "*"; anything else is a one-line error."""
    expected = 'expected ports as numbers, "8000-8100" ranges or "*"'
    if isinstance(entry, bool) or not isinstance(entry, int | str):
        raise ValueError(f"{expected}, got {entry!r}")
    if entry == "*":
        return entry
    text = str(entry).strip()
    match = re.fullmatch(r"(\d+)(?:-(\d+))?", text)
    if not match:
        raise ValueError(f"{expected}, got {entry!r}")
    low, high = int(match.group(1)), int(match.group(2) or match.group(1))
    if not 0 < low <= high < 65536:
        raise ValueError(f"{expected} from 1 to 65535 (low-high), got {entry!r}")
    return low if low == high else f"{low}-{high}"


def _port_range(entry: int | str) -> tuple[int, int]:
    if entry == "*":
        return 1, 65535
    low, _, high = str(entry).partition("-")
    return int(low), int(high or low)


def check_rules(rules: Sequence[Rule], approver_groups: Sequence[str]) -> None:
    """Cross-checks a single rule cannot make; raises ValueError with one line naming the rule."""
    seen: set[str] = set()
    for index, rule in enumerate(rules):
        if rule.name in seen:
            raise ValueError(f"rules[{index}].name: expected unique rule names; {rule.name!r} is declared twice")
        seen.add(rule.name)
        if rule.effect == "approve" and not rule.approvers and not approver_groups:
            raise ValueError(
                f"rules[{index}] ({rule.name}): an approve rule needs approvers = [groups], "
                "or set [approvals] approver_groups"
            )


# Who and where.
@dataclass(frozen=True)
class Subject:
    """Who does it, and where: the host (with its labels) and the login on it (None: not chosen yet)."""

    user: str
    groups: tuple[str, ...]
    host: str
    labels: Mapping[str, str]
    login: str | None = None


# What: the actions policy decides. Each is one small frozen value.
@dataclass(frozen=True)
class Connect:
    """Reaching the host (the outer connection), and the login on it when the subject names one."""


@dataclass(frozen=True)
class Shell:
    """Opening an interactive shell."""


@dataclass(frozen=True)
class Exec:
    """An exec request's command line, before it reaches the target."""

    command: str


@dataclass(frozen=True)
class ShellLine:
    """A line typed in an interactive shell, as reconstructed at Enter."""

    command: str


@dataclass(frozen=True)
class Forward:
    """A forwarded TCP channel to a port on the host."""

    port: int


@dataclass(frozen=True)
class McpTool:
    """An MCP `tools/call`: the tool's name and its arguments."""

    tool: str
    arguments: Mapping[str, Any]


Action = Connect | Shell | Exec | ShellLine | Forward | McpTool


def action_kind(action: Action) -> str:
    """connect, shell, exec, shell_line, forward or mcp_tool."""
    return {
        Connect: "connect",
        Shell: "shell",
        Exec: "exec",
        ShellLine: "shell_line",
        Forward: "forward",
        McpTool: "mcp_tool",
    }[type(action)]


def action_text(action: Action) -> str:
    """The action as a person reads it (raw: sanitize before putting it on someone's screen)."""
    if isinstance(action, Exec | ShellLine):
        return action.command
    if isinstance(action, Forward):
        return f"port {action.port}"
    if isinstance(action, McpTool):
        return f"{action.tool} {_json(action.arguments)}"
    return action_kind(action)


def action_key(action: Action) -> str:
    """What makes two actions "the same" for a grant window: an exec and a shell line of one command are."""
    if isinstance(action, Exec | ShellLine):
        return "command:" + action.command.strip()
    if isinstance(action, McpTool):
        return f"mcp:{action.tool}:{_json(action.arguments)}"
    return f"{action_kind(action)}:{action_text(action)}"


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


@dataclass(frozen=True)
class Decision:
    """The outcome for one action: the effect, the rule that made it (None: default deny) and why."""

    effect: Effect
    rule: str | None
    message: str
    matched: tuple[str, ...] = ()
    approvers: tuple[str, ...] = ()
    approvals: int = 1
    grant: float | None = None

    @property
    def allowed(self) -> bool:
        return self.effect == "allow"


class _CompiledRule:
    """A rule with its patterns compiled, and the matching of who, where and what."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.users = [_matcher(p) for p in rule.users]
        self.groups = [_matcher(p) for p in rule.groups]
        self.hosts = [_host_matcher(p) for p in rule.hosts]
        self.logins = [_matcher(p) for p in rule.logins]
        self.exec = [_matcher(p) for p in rule.exec]
        self.ports = [_port_range(p) for p in rule.forward]
        self.tools = [_matcher(p) for p in rule.mcp_tools]
        self.arguments = {name: _matcher(p) for name, p in rule.mcp_arguments.items()}
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
        """For deny and approve: does this rule cover the action (any part of a command line)?"""
        if not self.has_what:
            return True
        if isinstance(action, Shell):
            return self.rule.shell is True
        if line is not None:
            texts = [line.text.strip(), *(c for cmd in line.all_commands for c in cmd.candidates())]
            return any(m(text) for m in self.exec for text in texts)
        if isinstance(action, Forward):
            return any(low <= action.port <= high for low, high in self.ports)
        if isinstance(action, McpTool):
            return self._mcp(action)
        return False

    def covers_all_lines(self, action: Action) -> bool:
        """For allow: does this rule allow every command line of this kind (no "what", or a plain shell)?"""
        if not self.has_what:
            return True
        return isinstance(action, ShellLine) and self.rule.shell is True and not self.exec

    def covers(self, command_candidates: tuple[str, ...]) -> bool:
        return any(m(text) for m in self.exec for text in command_candidates)

    def _mcp(self, action: McpTool) -> bool:
        if not (self.tools or self.arguments):
            return False
        if self.tools and not any(m(action.tool) for m in self.tools):
            return False
        for name, matches in self.arguments.items():
            if name not in action.arguments:
                return False
            value = action.arguments[name]
            if not matches(value if isinstance(value, str) else _json(value)):
                return False
        return True


def _host_matcher(pattern: str) -> Callable[[str, Mapping[str, str]], bool]:
    if "=" not in pattern:
        name = _matcher(pattern)
        return lambda host, labels: name(host)
    wanted = []
    for part in pattern.split(","):
        key, _, value = part.partition("=")
        wanted.append((key.strip(), _matcher(value.strip())))
    return lambda host, labels: all(k in labels and m(labels[k]) for k, m in wanted)


class Policy:
    """The one policy evaluator: every path (connect, shell, exec, shell lines, forwards, MCP) asks it."""

    def __init__(self, rules: Sequence[Rule]) -> None:
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
        line = parse(action.command) if isinstance(action, Exec | ShellLine) else None
        winners = [c for c in candidates if c.rule.effect != "allow" and c.hits(action, line)]
        allowing, uncovered = self._allowing(candidates, action, line)
        return self._decision(winners + allowing, uncovered)

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
        partial = [c for c in rules if c.exec and c not in whole]
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
            covering = [c for c in partial if c.covers(texts)]
            if not covering:
                return [], command.program
            used += [c for c in covering if c not in used]
        return sorted(used or partial, key=self._compiled.index), None

    def _decision(self, matched: list[_CompiledRule], uncovered: str | None) -> Decision:
        matched = sorted(matched, key=self._compiled.index)
        names = tuple(c.rule.name for c in matched)
        if not matched:
            reason = f"no rule allows {sanitize_for_display(uncovered)!r} here" if uncovered else "no rule allows this"
            return Decision("deny", None, reason, names)
        top = max(_RANK[c.rule.effect] for c in matched)
        rule = next(c.rule for c in matched if _RANK[c.rule.effect] == top)
        message = rule.message or _DEFAULT_MESSAGE[rule.effect]
        return Decision(rule.effect, rule.name, message, names, rule.approvers, rule.approvals, rule.grant)
