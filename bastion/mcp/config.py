"""MCP settings: the servers a host declares (`[[hosts.mcp]]`) and the `[mcp]` table; one-line errors."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from bastion.config_types import Section
from bastion.control.patterns import matcher

__all__ = ["McpServer", "McpSettings"]

SHELL_SYNTAX = ";&|$`<>()\n\r"  # a command with any of these is more than one simple command
SERVER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class McpServer(Section):
    """One MCP server on a host: a stdio command (an exec of exactly it, or of a glob), or an HTTP port."""

    name: str
    command: str | None = None  # stdio: the exec command that is this server (a glob or re: allowed)
    port: int | None = Field(default=None, ge=1, le=65535)  # Streamable HTTP on the target's loopback
    path: str = "/mcp"
    login: str | None = None  # for outer-connection forwards; default: the host's first login

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not SERVER_NAME.match(value):
            raise ValueError(f"expected a server name of letters, digits, '.', '-', '_', got {value!r}")
        return value

    @field_validator("command")
    @classmethod
    def _command(cls, value: str | None) -> str | None:
        if value is not None:
            if not value.strip():
                raise ValueError('expected the command that starts the server, such as "python3 -m files_server"')
            try:
                matcher(value.strip())
            except ValueError as error:
                raise ValueError(str(error)) from None
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f'expected an HTTP path such as "/mcp", got {value!r}')
        return value

    @model_validator(mode="after")
    def _one_transport(self) -> McpServer:
        if (self.command is None) == (self.port is None):
            raise ValueError(f"MCP server {self.name!r}: expected exactly one of command (stdio) or port (HTTP)")
        return self

    def runs(self, command: str) -> bool:
        """Is this exec command this stdio server (the whole command, one simple command)?"""
        if self.command is None or any(char in command for char in SHELL_SYNTAX):
            return False  # `python3 -m files_server; id` is a shell command line, not the server
        return matcher(self.command.strip())(command.strip())


class McpSettings(Section):
    """The `[mcp]` table."""

    hide_denied_tools: bool = True  # tools/list leaves out tools the rules deny to the user for all arguments
    max_message: int = Field(default=4 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)  # bytes per JSON-RPC message
