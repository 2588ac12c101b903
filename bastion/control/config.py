"""Control's settings: the `[[rules]]` entries and the `[approvals]` table, validated with one-line errors.

How rules are matched and combined is in policy.py.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from bastion.config_types import Duration, Section
from bastion.control.actions import Effect
from bastion.control.exec_match import ExecPattern
from bastion.control.patterns import validate_patterns

__all__ = ["ApprovalSettings", "OpaqueEffect", "PolicySettings", "Rule", "check_rules"]

OpaqueEffect = Literal["approve", "deny", "allow"]


def _exec_kind(value: Any) -> str:
    return "table" if isinstance(value, dict | ExecPattern) else "text"


# An `exec` entry: a text pattern ("rm -rf *"), or a table matched on options in any order and grouping.
ExecEntry = Annotated[Annotated[str, Tag("text")] | Annotated[ExecPattern, Tag("table")], Discriminator(_exec_kind)]

_RULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")
WHAT_KEYS = ("shell", "exec", "forward", "mcp_servers", "mcp_tools", "mcp_arguments")


class Rule(Section):
    """One `[[rules]]` entry: who, where, what, and the effect when all of them match."""

    name: str
    effect: Effect
    users: tuple[str, ...] = ("*",)
    groups: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ("*",)
    logins: tuple[str, ...] = ("*",)
    shell: bool | None = None
    exec: tuple[ExecEntry, ...] = ()  # command patterns (text), or structured: { program, options, args }
    forward: tuple[int | str, ...] = ()
    mcp_servers: tuple[str, ...] = ()  # declared MCP servers ([[hosts.mcp]] name): globs or re:
    mcp_tools: tuple[str, ...] = ()
    # an argument name, or a JSON pointer such as "/options/path", to a glob or re: on its value; all must match
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
        return validate_patterns(value, "name")

    @field_validator("groups", "approvers", "mcp_servers", "mcp_tools")
    @classmethod
    def _globs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return validate_patterns(value, "name")

    @field_validator("exec")
    @classmethod
    def _exec(cls, value: tuple[ExecEntry, ...]) -> tuple[ExecEntry, ...]:
        validate_patterns(tuple(entry for entry in value if isinstance(entry, str)), "command")
        return value

    @field_validator("mcp_arguments")
    @classmethod
    def _arguments(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not name:
                raise ValueError('expected an argument name or a JSON pointer such as "/options/path", got ""')
        validate_patterns(tuple(value.values()), "argument")
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
        return any(getattr(self, key) not in (None, (), {}) for key in WHAT_KEYS)


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


class PolicySettings(Section):
    """The `[policy]` table."""

    # A command line whose programs the bastion cannot tell (sh -c, python3 -c, | sh, eval, $CMD...), where
    # a deny or approve rule applies: held for approval ("approve", denied where nobody may approve), "deny",
    # or "allow" (decided like any other line: the deny list is then only as good as its patterns).
    opaque: OpaqueEffect = "approve"


class ApprovalSettings(Section):
    """The `[approvals]` table."""

    timeout: Duration = 600.0
    approver_groups: tuple[str, ...] = ()
