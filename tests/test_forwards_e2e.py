"""Forwards end to end: an allow rule without "what" keys opens no tunnel; only a rule naming the port does.

The attack this guards against: `ssh -N -L 19003:localhost:2222 -J bastion mcp@mcp-host` reached the
bastion's own SSH port (and the target's sshd, and any other loopback service of the target) because
the demo's allow rule, which names no `forward`, matched every action. The real ssh client, the
bastion as a process and Debian's sshd as the target; the target's loopback is this machine's, where
the test runs a service that answers every connection with a banner.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.demo.targets import free_port
from tests.conftest import BastionEnv, running_env, spawned, wait_until, write_config

pytestmark = pytest.mark.e2e

BANNER = b"loopback-only service: you should not see this through the bastion\n"

# The only allow rule names no "what": it lets dev log in and run commands, and must not open tunnels.
COMMANDS_ONLY = """
[[rules]]
name = "dev-works"
effect = "allow"
groups = ["dev"]
"""


class BannerServer(socketserver.ThreadingTCPServer):
    """A TCP service on 127.0.0.1 that answers each connection with BANNER and closes; `reached` is set once
    anyone connects."""

    daemon_threads = True

    def __init__(self) -> None:
        self.reached = threading.Event()
        super().__init__(("127.0.0.1", 0), _SendBanner)
        self.port = int(self.server_address[1])


class _SendBanner(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        assert isinstance(self.server, BannerServer)
        self.server.reached.set()
        self.request.sendall(BANNER)


@pytest.fixture(scope="module")
def service() -> Iterator[BannerServer]:
    server = BannerServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def fenv() -> Iterator[BastionEnv]:
    with running_env(COMMANDS_ONLY) as environment:
        yield environment


def configure(env: BastionEnv, rules: str) -> None:
    """Serve with these rules (and nothing else): the bastion restarts when they differ from the running ones."""
    before = env.config.read_text()
    write_config(env.root, env.port, env.target, env.login, rules)
    if env.config.read_text() != before or env.process is None:
        env.stop()
        env.start()


def listening(port: int) -> bool:
    """Whether something listens on this local TCP port (read from /proc: a probe would open a forward)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


@contextlib.contextmanager
def tunnel(env: BastionEnv, remote_ports: list[int]) -> Iterator[tuple[list[int], Path]]:
    """`ssh -N -L LOCAL:localhost:PORT... -J bastion LOGIN@mcp-host`, once it listens: the local ports, and
    the file that collects the client's stderr."""
    local_ports = [free_port() for _ in remote_ports]
    stderr = env.root / f"tunnel-{local_ports[0]}.err"
    forwards = [f"-L{local}:localhost:{remote}" for local, remote in zip(local_ports, remote_ports, strict=True)]
    command = ["ssh", "-F", str(env.ssh_config), "-N", "-o", "ExitOnForwardFailure=yes", *forwards,
               "-J", "bastion", f"{env.login}@mcp-host"]  # fmt: skip
    with open(stderr, "wb") as errors, spawned(command, stderr=errors) as client:

        def up() -> bool:
            if client.poll() is not None:
                raise AssertionError(f"the tunnel exited ({client.returncode}): {stderr.read_text()}")
            return all(listening(port) for port in local_ports)

        wait_until(up, f"the tunnel to listen on {local_ports}", timeout=30)
        yield local_ports, stderr


def first_answer(port: int) -> bytes:
    """What a connection through the tunnel hears first: b"" when the forward is refused (the client closes it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            return sock.recv(4096)
        except ConnectionResetError:
            return b""


def whole_answer(port: int) -> bytes:
    """Everything until the far end closes."""
    chunks = []
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks)


def refusal(port: int) -> str:
    return f"no rule allows forwards to port {port} here; a rule must name it: forward = [{port}]"


def assert_refused(env: BastionEnv, local: int, remote: int) -> None:
    """A connection to `local` hears nothing from localhost:`remote`, and the audit log says why."""
    assert first_answer(local) == b"", f"a forward to localhost:{remote} was opened"
    denied = env.logged("policy.deny", lambda f: f["action"] == "forward" and f["text"] == f"port {remote}")
    assert (denied[-1]["rule"], denied[-1]["matched"], denied[-1]["message"]) == (None, [], refusal(remote))
    refused = env.logged("forward.refused", lambda f: f["destination"] == f"localhost:{remote}")
    assert refused[-1]["reason"] == f"denied: {refusal(remote)}"


def test_an_allow_rule_without_what_opens_no_forward(fenv: BastionEnv, service: BannerServer) -> None:
    configure(fenv, COMMANDS_ONLY)
    service.reached.clear()
    # The loopback service, the bastion's own SSH port and the target's sshd, all on the target's loopback.
    ports = [service.port, fenv.port, fenv.target.port]
    with tunnel(fenv, ports) as (local_ports, stderr):
        for local, remote in zip(local_ports, ports, strict=True):
            assert_refused(fenv, local, remote)
        wait_until(lambda: refusal(service.port) in stderr.read_text(), "the client to print the refusal")
    assert not service.reached.is_set()
    assert fenv.ssh("echo", "commands-still-run").stdout == b"commands-still-run\n"  # the rule itself still works


def test_a_rule_naming_the_port_opens_that_forward_only(fenv: BastionEnv, service: BannerServer) -> None:
    named_rule = f'\n[[rules]]\nname = "loopback-service"\neffect = "allow"\nforward = [{service.port}]\n'
    configure(fenv, COMMANDS_ONLY + named_rule)
    with tunnel(fenv, [service.port, fenv.port]) as ((named, bastion_itself), _):
        assert whole_answer(named) == BANNER
        assert first_answer(bastion_itself) == b"", "the bastion's own port is named by no rule"
    opened = fenv.logged("forward.opened", lambda f: f["destination"] == f"localhost:{service.port}")
    assert (opened[-1]["rule"], opened[-1]["effect"]) == ("loopback-service", "allow")
