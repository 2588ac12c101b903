"""What policy decides about: who does it where (`Subject`), the action (`Action`), and the outcome (`Decision`); pure.

Each action is one small frozen value. A command line is parsed once per action, when first asked for.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bastion.control.command_line import CommandLine, parse

__all__ = [
    "Action",
    "Connect",
    "Decision",
    "Effect",
    "Exec",
    "Forward",
    "McpMethod",
    "McpTool",
    "Shell",
    "ShellLine",
    "Subject",
    "action_key",
    "action_kind",
    "action_text",
    "arguments_json",
]

Effect = Literal["allow", "deny", "approve"]


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
class _Command:
    command: str

    @functools.cached_property
    def line(self) -> CommandLine:
        """The command line parsed (once, however often policy and the gate ask)."""
        return parse(self.command)


@dataclass(frozen=True)
class Exec(_Command):
    """An exec request's command line, before it reaches the target."""


@dataclass(frozen=True)
class ShellLine(_Command):
    """A line typed in an interactive shell, as reconstructed at Enter."""


@dataclass(frozen=True)
class Forward:
    """A forwarded TCP channel to a port on the host."""

    port: int


@dataclass(frozen=True)
class McpTool:
    """An MCP `tools/call`: the tool's name and its arguments, on a declared server ("": any)."""

    tool: str
    arguments: Mapping[str, Any]
    server: str = ""


@dataclass(frozen=True)
class McpMethod:
    """Any other MCP message to a declared server: initialize, discovery, tools/list, resources, prompts,
    notifications, responses to the server's own requests."""

    server: str
    method: str


Action = Connect | Shell | Exec | ShellLine | Forward | McpTool | McpMethod


def action_kind(action: Action) -> str:
    """connect, shell, exec, shell_line, forward, mcp_tool or mcp_method."""
    return {
        Connect: "connect",
        Shell: "shell",
        Exec: "exec",
        ShellLine: "shell_line",
        Forward: "forward",
        McpTool: "mcp_tool",
        McpMethod: "mcp_method",
    }[type(action)]


def action_text(action: Action) -> str:
    """The action as a person reads it (raw: sanitize before putting it on someone's screen)."""
    if isinstance(action, Exec | ShellLine):
        return action.command
    if isinstance(action, Forward):
        return f"port {action.port}"
    if isinstance(action, McpTool):
        server = f"{action.server}: " if action.server else ""
        return f"{server}{action.tool} {arguments_json(action.arguments)}"
    if isinstance(action, McpMethod):
        return f"{action.server}: {action.method}"
    return action_kind(action)


def action_key(action: Action) -> str:
    """What makes two actions "the same" for a grant window: an exec and a shell line of one command are."""
    if isinstance(action, Exec | ShellLine):
        return "command:" + action.command.strip()
    if isinstance(action, McpTool):
        return f"mcp:{action.server}:{action.tool}:{arguments_json(action.arguments)}"
    return f"{action_kind(action)}:{action_text(action)}"


def arguments_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: one text for equal values (rule matching, grant keys)."""
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
    opaque: tuple[str, ...] = ()  # why the line could not be read, when that made the decision

    @property
    def allowed(self) -> bool:
        return self.effect == "allow"
