"""`[[hosts.mcp]]` and `[mcp]`: which exec is a declared stdio server, and one-line errors for bad entries."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from bastion.config import HostSettings
from bastion.mcp.config import McpServer, McpSettings

HOST: dict[str, Any] = {"name": "h", "address": "127.0.0.1:22", "logins": ["mcp"], "known_hosts": "/etc/hosts"}


def host(*servers: dict[str, Any]) -> HostSettings:
    return HostSettings.model_validate({**HOST, "mcp": list(servers)})


@pytest.mark.parametrize(
    "command, is_server",
    [
        ("python3 -m files_server", True),
        ("  python3 -m files_server  ", True),
        ("python3 -m files_server; id", False),  # one whole simple command, nothing more
        ("python3 -m files_server && id", False),
        ("python3 -m files_server | tee /tmp/x", False),
        ("python3 -m files_server $(id)", False),
        ("python3 -m files_server > /tmp/x", False),
        ("python3 -m files_serverx", False),
        ("python3 -m other_server", False),
    ],
)
def test_an_exec_is_the_server_only_as_one_whole_simple_command(command: str, is_server: bool) -> None:
    declared = host({"name": "files", "command": "python3 -m files_server"})
    assert (declared.mcp_stdio(command) is not None) is is_server


def test_a_glob_names_a_family_of_commands() -> None:
    declared = host({"name": "files", "command": "/usr/bin/python3 /srv/*/server.py --root *"})
    assert declared.mcp_stdio("/usr/bin/python3 /srv/a/server.py --root /data") is not None
    assert declared.mcp_stdio("/usr/bin/python3 /srv/a/server.py --root /data; rm -rf /") is None


@pytest.mark.parametrize(
    "servers, fragment",
    [
        ([{"name": "files"}], "exactly one of command (stdio) or port (HTTP)"),
        ([{"name": "files", "command": "x", "port": 8000}], "exactly one of command"),
        ([{"name": "bad name", "command": "x"}], "expected a server name"),
        ([{"name": "files", "port": 8000, "path": "mcp"}], 'expected an HTTP path such as "/mcp"'),
        ([{"name": "files", "port": 70000}], "less than or equal to 65535"),
        ([{"name": "files", "command": "a"}, {"name": "files", "command": "b"}], "declared twice"),
        ([{"name": "files", "port": 8000, "login": "root"}], "has login 'root', not one of"),
        ([{"name": "files", "command": "re:("}], "valid regular expression"),
    ],
)
def test_bad_entries_are_refused_in_one_line(servers: list[dict[str, Any]], fragment: str) -> None:
    with pytest.raises(ValidationError) as caught:
        host(*servers)
    assert fragment in str(caught.value)


def test_defaults() -> None:
    server = McpServer(name="tools", port=8000)
    assert server.path == "/mcp" and server.login is None and not server.runs("anything")
    settings = McpSettings()
    assert settings.hide_denied_tools is True and settings.max_message == 4 * 1024 * 1024
