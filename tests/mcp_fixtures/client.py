"""Client helpers over the official SDK (`mcp` 2.3.0): run files_server over stdio, locally or through
`ssh -J bastion`, in either protocol era, with a deadline so a test never hangs.

    params = local_params(["--marker-dir", str(markers)])         # or ssh_params(env, [...])
    names = run(list_tools, params, "legacy")
    result = run(call, params, "read_note", {"path": "a"}, "2026-07-28")

`mode="legacy"` makes the client do the initialize handshake (2025-11-25); `mode="2026-07-28"` pins
the stateless revision (no handshake: every request carries the version in `_meta`).

`RawSession` speaks JSON-RPC lines by hand (no SDK client) and keeps every line the server sent, for
tests that look at the wire itself.
"""

from __future__ import annotations

import json
import os
import pwd
import select
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO, TypeVar

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import CallToolResult

if TYPE_CHECKING:
    from tests.conftest import BastionEnv

Mode = Literal["legacy", "2026-07-28"]
MODES: tuple[Mode, ...] = ("legacy", "2026-07-28")
SERVER = Path(__file__).resolve().with_name("files_server.py")
TIMEOUT = 60.0  # seconds a sync helper may take before it fails
T = TypeVar("T")


@dataclass
class ProgressLog:
    """A progress callback (`Client.call_tool(..., progress_callback=log)`) that keeps what it receives."""

    updates: list[tuple[float, float | None, str | None]] = field(default_factory=list)

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.updates.append((progress, total, message))


def client(params: StdioServerParameters, mode: Mode, errlog: TextIO | None = None) -> Client:
    """An SDK client for the server `params` starts; `errlog` gets the process's stderr (default ours).

    `Client(params, mode=...)` takes StdioServerParameters directly; with `errlog` the transport is
    built here instead (`stdio_client(params, errlog=...)` is a Transport too).
    """
    if errlog is None:
        return Client(params, mode=mode, cache=None)
    return Client(stdio_client(params, errlog=errlog), mode=mode, cache=None)


async def list_tools(params: StdioServerParameters, mode: Mode, errlog: TextIO | None = None) -> list[str]:
    """The names of the server's tools, in its order."""
    async with client(params, mode, errlog) as session:
        return [tool.name for tool in (await session.list_tools()).tools]


async def call(
    params: StdioServerParameters,
    tool: str,
    arguments: dict[str, Any],
    mode: Mode,
    progress: ProgressLog | None = None,
    errlog: TextIO | None = None,
) -> CallToolResult:
    """Call one tool in a fresh connection (a tools/list first, as clients do, so the result is validated
    against the listed outputSchema)."""
    async with client(params, mode, errlog) as session:
        await session.list_tools()
        return await session.call_tool(tool, arguments, progress_callback=progress)


def run(function: Callable[..., Awaitable[T]], *args: Any, timeout: float = TIMEOUT, **kwargs: Any) -> T:
    """Run an async helper to completion from sync code; TimeoutError after `timeout` seconds."""

    async def bounded() -> T:
        with anyio.fail_after(timeout):
            return await function(*args, **kwargs)

    return anyio.run(bounded)


def local_params(server_args: Sequence[str] = ()) -> StdioServerParameters:
    """files_server as a local subprocess of this interpreter (no ssh, no bastion)."""
    return StdioServerParameters(command=sys.executable, args=[str(SERVER), *server_args])


def remote_python(login: str) -> str:
    """An interpreter the target's login can execute: ours when it may run it, else the system python3.

    (The repository's virtualenv python can be a symlink into /root, which a login other than root
    cannot traverse; files_server.py then finds the virtualenv's packages by itself.)
    """
    ours = Path(sys.executable).resolve()
    if login == pwd.getpwuid(os.getuid()).pw_name or _others_may_run(ours):
        return sys.executable
    system = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    if system is None:
        raise RuntimeError(f"{login} cannot run {ours} and there is no system python3")
    return system


def _others_may_run(path: Path) -> bool:
    """Whether any account may execute `path`: every parent directory searchable, the file executable."""
    if not path.stat().st_mode & stat.S_IXOTH:
        return False
    return all(parent.stat().st_mode & stat.S_IXOTH for parent in path.parents)


def remote_command(login: str, server_args: Sequence[str] = ()) -> list[str]:
    """The command that runs files_server on the target: `PYTHON /abs/path/files_server.py ARGS`, each word
    shell-quoted (ssh joins them with spaces for the login's shell; plain words are left as they are)."""
    return [shlex.quote(word) for word in (remote_python(login), str(SERVER), *server_args)]


def ssh_params(
    env: BastionEnv, server_args: Sequence[str] = (), extra_ssh: Sequence[str] = ()
) -> StdioServerParameters:
    """files_server on the target through the bastion: `ssh -F CFG [EXTRA] -J bastion LOGIN@mcp-host CMD`.

    The remote command runs in the login's home directory; it needs no cwd nor PYTHONPATH.
    """
    return StdioServerParameters(
        command="ssh",
        args=[
            "-F",
            str(env.ssh_config),
            *extra_ssh,
            "-J",
            "bastion",
            f"{env.login}@mcp-host",
            *remote_command(env.login, server_args),
        ],
    )


def marker_dir() -> Path:
    """A fresh directory any account can write markers in (pytest's tmp_path is 0700: not for the login)."""
    path = Path(tempfile.mkdtemp(prefix="mcp-markers-"))
    path.chmod(0o1777)
    return path


class RawSession:
    """The server as a subprocess spoken to in JSON-RPC lines by hand; `lines` keeps every stdout line.

    For what the SDK client hides: the exact bytes on the wire, malformed or crafted messages.
    """

    def __init__(self, params: StdioServerParameters, timeout: float = TIMEOUT) -> None:
        self.timeout = timeout
        self.lines: list[bytes] = []
        self._next_id = 0
        self.process = subprocess.Popen(
            [params.command, *params.args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=params.cwd,
            env={**os.environ, **(params.env or {})},
        )
        self._buffer = b""

    def __enter__(self) -> RawSession:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def send(self, message: dict[str, Any] | bytes) -> None:
        """Write one message (a dict is JSON-encoded) as one line."""
        line = message if isinstance(message, bytes) else json.dumps(message).encode()
        assert self.process.stdin is not None
        self.process.stdin.write(line.rstrip(b"\n") + b"\n")
        self.process.stdin.flush()

    def read_line(self) -> bytes:
        """The next line the server writes (without its newline); TimeoutError after `timeout`."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + self.timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(f"no line from the server in {self.timeout:.0f} s: {self._buffer[-500:]!r}")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise EOFError(f"the server closed its output: {self._buffer[-500:]!r}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        self.lines.append(line)
        return line

    def request(self, method: str, params: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[bytes]]:
        """Send a request; return its response (parsed) and every line read meanwhile, the response's last."""
        self._next_id += 1
        request_id = self._next_id
        self.send({"jsonrpc": "2.0", "id": request_id, "method": method, **({"params": params} if params else {})})
        seen: list[bytes] = []
        while True:
            line = self.read_line()
            seen.append(line)
            try:
                message = json.loads(line)
            except ValueError:
                continue  # kept in `seen` and `lines`: the caller may want to see what broke it
            if (
                isinstance(message, dict)
                and message.get("id") == request_id
                and ("result" in message or "error" in message)
            ):
                return message, seen

    def initialize(self, version: str = "2025-11-25") -> dict[str, Any]:
        """The legacy handshake: initialize, then notifications/initialized; returns the initialize response."""
        response, _ = self.request(
            "initialize",
            {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
        )
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return response

    def close(self) -> None:
        """Close its stdin (the server then exits), wait a little, kill if need be."""
        for stream in (self.process.stdin,):
            if stream is not None and not stream.closed:
                stream.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
