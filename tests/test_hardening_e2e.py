"""What one client can make the bastion hold, and the attempts it must leave in the audit log: absurd
terminal sizes, channels per connection, sessions per user, remote and stream-local forwards, dropped
environment variables. Real OpenSSH and an asyncssh client (for what OpenSSH cannot send), a real sshd."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import asyncssh
import pytest

from bastion.demo.targets import free_port
from tests.conftest import BastionEnv, running_env

pytestmark = pytest.mark.e2e

CHANNELS, SESSIONS = 3, 4
SILENT, CLOSED = free_port(), free_port()  # a service that never answers; a port nobody listens on
RULES = f"""
[[rules]]
name = "allow-all"
effect = "allow"

[[rules]]
name = "forwards"
effect = "allow"
forward = [{SILENT}, {CLOSED}]
"""


@pytest.fixture(scope="module")
def henv() -> Iterator[BastionEnv]:
    limits = f"max_channels_per_connection = {CHANNELS}\nmax_sessions_per_user = {SESSIONS}"
    with running_env(RULES, server=limits) as environment:
        yield environment


@pytest.fixture
def silent_service() -> Iterator[None]:
    """A TCP service on the target's loopback that accepts and then says nothing, ever."""
    server = socket.create_server(("127.0.0.1", SILENT))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                accepted.append(server.accept()[0])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in accepted:
            conn.close()
        server.close()


def _options(env: BastionEnv) -> dict[str, object]:
    key = asyncssh.read_private_key(str(env.user_key))
    cert = asyncssh.read_certificate(f"{env.user_key}-cert.pub")
    known = asyncssh.import_known_hosts((env.root / "client_known_hosts").read_text())
    return {"client_keys": [(key, cert)], "known_hosts": known, "config": None, "agent_path": None}


@asynccontextmanager
async def bastion(env: BastionEnv) -> AsyncIterator[asyncssh.SSHClientConnection]:
    async with asyncssh.connect("127.0.0.1", env.port, username="alice", **_options(env)) as conn:
        yield conn


@asynccontextmanager
async def hop(env: BastionEnv, jump: asyncssh.SSHClientConnection) -> AsyncIterator[asyncssh.SSHClientConnection]:
    """`ssh -J bastion mcp-host`, as asyncssh does it: an SSH connection inside a direct-tcpip channel."""
    async with asyncssh.connect("mcp-host", 22, tunnel=jump, username=env.login, **_options(env)) as conn:
        yield conn


def rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status").read().splitlines():  # noqa: SIM115
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def bastion_pid(env: BastionEnv) -> int:
    assert env.process is not None
    return env.process.pid


def test_an_absurd_terminal_size_is_clamped_and_audited(henv: BastionEnv) -> None:
    """rows = 20,000,000 in the pty request and 2^32-1 in a window change: the target and the bastion's
    screen get at most 512 x 256, the bastion's memory does not grow with the number, and both are audited."""
    before = rss_kib(bastion_pid(henv))

    async def run() -> list[str]:
        async with bastion(henv) as jump, hop(henv, jump) as conn:
            shell = await conn.create_process(term_type="xterm", term_size=(80, 20_000_000))
            shell.stdin.write("stty size; echo size-$((0+1))-done\n")  # the echo of the line is not the marker
            first = await asyncio.wait_for(shell.stdout.readuntil("size-1-done\r\n"), 30)
            shell.change_terminal_size(2**32 - 1, 2**32 - 1)
            shell.stdin.write("stty size; echo size-$((1+1))-done; exit\n")
            second = await asyncio.wait_for(shell.stdout.readuntil("size-2-done\r\n"), 30)
            await asyncio.wait_for(shell.wait(), 30)
            return [first, second]

    first, second = asyncio.run(run())
    assert "\r256 80\r\nsize-1-done" in first and "\r256 512\r\nsize-2-done" in second
    assert rss_kib(bastion_pid(henv)) - before < 100 * 1024, "the bastion's memory grew with the terminal size"
    clamped = henv.logged("terminal.clamped", lambda f: f["requested"] == [80, 20_000_000])[-1]
    assert clamped["user"] == "alice" and clamped["applied"] == [80, 256]
    henv.sealed(clamped["session"])  # the window change is in the recording (the audit log has one entry a session)
    markers = [e.fields()["text"] for e in henv.store().events(clamped["session"]) if e.type == "marker"]
    assert f"terminal size {2**32 - 1}x{2**32 - 1} clamped to 512x256" in markers
    assert len(henv.logged("terminal.clamped", lambda f: f["session"] == clamped["session"])) == 1


def test_channels_per_connection_are_capped_and_audited(henv: BastionEnv) -> None:
    since = time.time()

    async def run() -> str:
        async with bastion(henv) as jump, hop(henv, jump) as conn:
            held = [await conn.create_process("echo up; exec sleep 60") for _ in range(CHANNELS)]
            for process in held:
                assert (await asyncio.wait_for(process.stdout.readline(), 30)).strip() == "up"
            with pytest.raises(asyncssh.ChannelOpenError) as refused:
                await conn.create_process("echo one too many")
            for process in held:
                process.terminate()
            return refused.value.reason

    reason = asyncio.run(run())
    assert "too many channels on one connection" in reason
    entry = henv.logged("channel.refused", lambda f: f.get("kind") == "session", since=since)[-1]
    assert entry["user"] == "alice" and "at most 3" in entry["reason"]


def test_hops_on_one_outer_connection_are_capped(henv: BastionEnv) -> None:
    since = time.time()

    async def run() -> None:
        async with bastion(henv) as jump, hop(henv, jump), hop(henv, jump), hop(henv, jump):
            with pytest.raises((asyncssh.ChannelOpenError, asyncssh.Error, OSError)):
                async with hop(henv, jump):
                    pass

    asyncio.run(run())
    henv.logged("channel.refused", lambda f: f.get("kind") == "hop" and f["user"] == "alice", since=since)


def test_live_sessions_per_user_are_capped_across_connections(henv: BastionEnv) -> None:
    since = time.time()

    async def run() -> str:
        async with bastion(henv) as jump, hop(henv, jump) as first, hop(henv, jump) as second:
            held = [await first.create_process("echo up; exec sleep 60") for _ in range(CHANNELS)]
            held.append(await second.create_process("echo up; exec sleep 60"))
            for process in held:
                assert (await asyncio.wait_for(process.stdout.readline(), 30)).strip() == "up"
            with pytest.raises(asyncssh.ChannelOpenError) as refused:
                await second.create_process("echo one too many")
            for process in held:
                process.terminate()
            return refused.value.reason

    reason = asyncio.run(run())
    assert f"alice has {SESSIONS} sessions open" in reason
    henv.logged("channel.refused", lambda f: "sessions open" in f["reason"], since=since)


def test_remote_and_stream_local_forwards_are_refused_and_audited(henv: BastionEnv) -> None:
    """-R through the hop (a TCP port and a Unix socket on the target) and a direct stream-local channel:
    none is offered, and each attempt is in the audit log."""
    since = time.time()
    for spec in ("0:127.0.0.1:9", "/tmp/bastion-test-remote.sock:127.0.0.1:9"):
        result = henv.ssh("-o", "ExitOnForwardFailure=yes", "-N", "-R", spec, timeout=60)
        assert result.returncode != 0 and b"forwarding failed" in result.stderr.lower(), result.stderr
    for kind in ("remote", "stream-local"):
        henv.logged("forward.refused", lambda f, kind=kind: f["user"] == "alice" and f.get("kind") == kind, since=since)

    async def run() -> str:
        async with bastion(henv) as jump, hop(henv, jump) as conn:
            with pytest.raises(asyncssh.ChannelOpenError) as channel:
                await conn.open_unix_connection("/run/sshd.pid")
            return channel.value.reason

    assert "stream-local" in asyncio.run(run())
    henv.logged("forward.refused", lambda f: f["destination"] == "/run/sshd.pid", since=since)


def test_environment_the_bastion_does_not_pass_on_is_audited(henv: BastionEnv) -> None:
    since = time.time()
    result = henv.ssh(
        "-o",
        "SetEnv=LC_ALLOWED=yes INJECTED_PATH=/tmp/evil BASTION_REASON=testing",  # the last is the bastion's own
        "echo env-$LC_ALLOWED-${INJECTED_PATH:-none}",
    )
    assert result.returncode == 0 and result.stdout == b"env-yes-none\n", result.stderr
    entry = henv.logged("env.dropped", lambda f: f["user"] == "alice", since=since)[-1]
    assert entry["names"] == ["INJECTED_PATH"] and entry["count"] == 1


def test_ssh_through_the_capped_bastion_still_works(henv: BastionEnv) -> None:
    """The limits leave ordinary use alone: OpenSSH's ssh -J, one session after another on fresh connections."""
    for index in range(SESSIONS + 2):
        result = henv.ssh(f"echo ordinary-{index}")
        assert result.returncode == 0 and result.stdout == f"ordinary-{index}\n".encode(), result.stderr


class _Unasked(asyncssh.SSHClientConnection):
    """An attacker's client: it tries password and keyboard-interactive although the bastion offers neither
    (OpenSSH and asyncssh clients only try what the server lists, so this one is crafted)."""

    _unoffered = [b"password", b"keyboard-interactive"]

    def try_next_auth(self, *, next_method: bool = False) -> None:
        tried = getattr(self, "_tried", 0)
        if tried < len(self._unoffered):  # after each failure, the next method the server did not list
            self._tried = tried + 1
            self._auth_methods = [self._unoffered[tried]]
            next_method = False
        super().try_next_auth(next_method=next_method)


class _Guesser(asyncssh.SSHClient):
    def kbdint_auth_requested(self) -> str:
        return ""

    def kbdint_challenge_received(self, name: str, instruction: str, lang: str, prompts: object) -> list[str]:
        return ["hunter2"]


def test_password_and_keyboard_interactive_attempts_are_refused_and_audited(
    henv: BastionEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    since = time.time()
    monkeypatch.setattr(asyncssh.connection, "SSHClientConnection", _Unasked)

    async def run() -> None:
        with pytest.raises(asyncssh.PermissionDenied):
            await asyncssh.connect(
                "127.0.0.1", henv.port, username="mallory", password="hunter2", known_hosts=None,
                client_keys=None, agent_path=None, config=None, kbdint_auth=True, client_factory=_Guesser,
            )  # fmt: skip

    asyncio.run(run())
    entry = henv.logged("auth.failed", lambda f: f["user"] == "mallory", since=since)[-1]
    reasons = " ".join(entry["reasons"])
    assert "password authentication is not offered" in reasons
    assert "keyboard-interactive authentication is not offered" in reasons
    assert "hunter2" not in json.dumps(entry)
    refused = henv.logged("auth.refused", lambda f: f["user"] == "mallory", since=since)
    assert {f["method"] for f in refused} <= {"password", "keyboard-interactive"}
    henv.logged("auth.refused", lambda f: f["user"] == "mallory" and f["method"] == "keyboard-interactive", since=since)


def test_a_closed_forward_gives_its_channel_back(henv: BastionEnv, silent_service: None) -> None:
    """Forwards to a service that never answers, closed by the client: each channel closes through to the
    target and is counted no more, so the connection can still open as many sessions as its limit."""

    async def run() -> list[str]:
        async with bastion(henv) as jump, hop(henv, jump) as conn:
            for _ in range(CHANNELS):
                _, writer = await conn.open_connection("localhost", SILENT)
                writer.close()
                await asyncio.wait_for(writer.channel.wait_closed(), 30)
            processes = [await conn.create_process("echo up; exec sleep 60") for _ in range(CHANNELS)]
            lines = [(await asyncio.wait_for(p.stdout.readline(), 30)).strip() for p in processes]
            for process in processes:
                process.terminate()
            return lines

    assert asyncio.run(run()) == ["up"] * CHANNELS


def test_an_allowed_forward_the_target_refuses_is_refused_to_the_client_and_audited(henv: BastionEnv) -> None:
    since = time.time()

    async def run() -> str:
        async with bastion(henv) as jump, hop(henv, jump) as conn:
            with pytest.raises(asyncssh.ChannelOpenError) as refused:
                await conn.open_connection("localhost", CLOSED)
            return refused.value.reason

    assert "the target refused" in asyncio.run(run())
    henv.logged("forward.failed", lambda f: f["destination"] == f"localhost:{CLOSED}", since=since)
