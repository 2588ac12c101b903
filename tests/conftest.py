"""Fixtures with real parts: Debian's sshd as the target, `bastion serve` as a process, OpenSSH's ssh.

One bastion and one target serve the whole run (they are slow to start, and tests that need a
different setup start their own). Every test gets its own session ids, so tests do not interfere.

The serving bastion commits what it records from its own process, so a test that reads the
database waits for the entry it needs (`logged`, `latest_session`, `wait_until`), never for a while.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bastion.demo.targets import TargetSshd, ensure_login, free_port
from bastion.storage import SqliteStore as Store

BIN = Path(sys.executable).parent
T = TypeVar("T")


def wait_until(condition: Callable[[], T | None], what: str, timeout: float = 10.0, interval: float = 0.05) -> T:
    """Poll `condition` until it returns something truthy, and return that; fail saying `what` never happened.

    For conditions another process brings about with no event to wait on (a commit by `bastion
    serve`, a port listening): the deadline only bounds a failure, a passing test never waits it out.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def run_bastion(*args: str, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(BIN / "bastion"), *args], capture_output=True, text=True, timeout=60, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"bastion {' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result


@dataclass
class BastionEnv:
    """A running bastion with one real target, and an ssh client configured for a user."""

    root: Path
    config: Path
    port: int
    target: TargetSshd
    login: str
    user_key: Path
    ssh_config: Path
    process: subprocess.Popen[bytes] | None = None
    _store: Store | None = field(default=None, repr=False)

    def ssh(
        self,
        *args: str,
        input: bytes | None = None,
        timeout: float = 120,
        jump: bool = True,
        host: str = "mcp-host",
        login: str | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """`ssh -F cfg -J bastion LOGIN@HOST ARGS...` with the real OpenSSH client."""
        destination = f"{login or self.login}@{host}"
        command = ["ssh", "-F", str(self.ssh_config), *(["-J", "bastion"] if jump else []), destination, *args]
        return subprocess.run(command, input=input, capture_output=True, timeout=timeout)

    def bastion(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_bastion(*args, "-c", str(self.config), check=check)

    def store(self) -> Store:
        """This environment's database, opened once (its reads see what `bastion serve` committed); see close()."""
        if self._store is None:
            self._store = Store(self.root / "state" / "bastion.db")
        return self._store

    def issue(self, user: str, key_name: str, *extra: str) -> Path:
        key = self.root / key_name
        if not key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        run_bastion("cert", "issue", "-c", str(self.config), "--user", user, "--pubkey", f"{key}.pub", *extra)
        return key

    def logged(
        self, type_: str, match: Callable[[dict[str, Any]], bool] = lambda f: True, since: float | None = None
    ) -> list[dict[str, Any]]:
        """Audit-log entries of a type that match (logged at or after `since`, when given); waits (10 s at
        most) for the serving bastion to commit at least one."""

        def found() -> list[dict[str, Any]]:
            entries = self.store().audit_log(type_)
            return [e["fields"] for e in entries if (since is None or e["ts"] >= since) and match(e["fields"])]

        return wait_until(found, f"a matching {type_} entry in the audit log")

    def sealed(self, session_id: str) -> None:
        """Wait until the session's seal is committed: then all it recorded is too (it is written last)."""
        self.logged("session.end", lambda f: f["session"] == session_id)

    def latest_session(self, command_part: str) -> str:
        """The id of the newest finished session whose command contains `command_part`, once it is sealed."""

        def finished() -> str | None:
            rows = json.loads(self.bastion("sessions", "list", "--json").stdout)
            for row in rows:
                if command_part in (row["command"] or "") and row["status"] != "live":
                    return str(row["id"])
            return None

        session_id = wait_until(finished, f"a finished session with {command_part!r}", interval=0.1)
        self.sealed(session_id)
        return session_id

    def start(self) -> None:
        with open(self.root / "serve.log", "ab") as log:  # the child has its own copy of the descriptor
            self.process = subprocess.Popen(
                [str(BIN / "bastion"), "serve", "-c", str(self.config)], stdout=log, stderr=log, start_new_session=True
            )
        wait_for_port(self.port, self.process, self.root / "serve.log")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=10)
        self.process = None

    def close(self) -> None:
        """Stop the bastion and the target, and close the store that store() opened."""
        try:
            self.stop()
        finally:
            if self._store is not None:
                self._store.close()
                self._store = None
            self.target.stop()


@contextlib.contextmanager
def spawned(args: list[str], **kwargs: Any) -> Iterator[subprocess.Popen[Any]]:
    """subprocess.Popen that does not outlive the block, passed or failed: killed if still running,
    its pipes closed, reaped."""
    process = subprocess.Popen(args, **kwargs)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()
        process.wait(timeout=10)


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 15) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"process exited early: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


ALLOW_ALL = """
[[rules]]
name = "allow-all"
effect = "allow"
"""


def write_config(
    root: Path, port: int, target: TargetSshd, login: str, extra: str = "", server: str = "", host: str = ""
) -> Path:
    wrong_key = root / "wrong_host_key"
    if not wrong_key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong_key)], check=True)
    wrong_pub = " ".join(wrong_key.with_suffix(".pub").read_text().split()[:2])
    (root / "known_hosts").write_text(target.known_hosts_line() + "\n")
    config = root / "bastion.toml"
    config.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
state_dir = "state"
{server}

[[hosts]]
name = "mcp-host"
address = "127.0.0.1:{target.port}"
logins = ["{login}"]
known_hosts = "known_hosts"
{host}

[[hosts]]
name = "pinned-host"
address = "127.0.0.1:{target.port}"
logins = ["{login}"]
host_key = "{target.host_public_key()}"

[[hosts]]
name = "wrong-key-host"
address = "127.0.0.1:{target.port}"
logins = ["{login}"]
host_key = "{wrong_pub}"

[[hosts]]
name = "key-host"
address = "127.0.0.1:{target.port}"
logins = ["{login}"]
host_key = "{target.host_public_key()}"
credential = "key:upstream_key"
{extra if "[[rules]]" in extra else extra + ALLOW_ALL}
""")
    return config


def write_ssh_config(root: Path, port: int, user: str, key: Path, known_hosts_line: str) -> Path:
    (root / "client_known_hosts").write_text(known_hosts_line + "\n")
    path = root / "ssh_config"
    path.write_text(f"""Host bastion
  HostName 127.0.0.1
  Port {port}
  User {user}
Host *
  IdentityFile {key}
  CertificateFile {key}-cert.pub
  IdentitiesOnly yes
  UserKnownHostsFile {root / "client_known_hosts"}
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  BatchMode yes
  ConnectTimeout 10
  ServerAliveInterval 5
  ServerAliveCountMax 6
""")
    return path


def make_env(root: Path, extra: str = "", server: str = "", host: str = "") -> BastionEnv:
    if not shutil.which("sshd") and not Path("/usr/sbin/sshd").exists():
        raise RuntimeError("sshd is missing: install Debian's openssh-server (scripts/test does)")
    login = ensure_login()
    port = free_port()
    state = root / "state"
    (root / "bastion.toml").write_text(f'[server]\nlisten = "127.0.0.1:{port}"\nstate_dir = "state"\n')
    init = json.loads(run_bastion("init", "-c", str(root / "bastion.toml"), "--json").stdout)
    target = TargetSshd("mcp-host", root / "target", state / "upstream_ca.pub").start()
    try:
        # The key credential ("key:upstream_key") is accepted by the target through authorized_keys.
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / "upstream_key")], check=True)
        os.chmod(root / "upstream_key", 0o600)
        (target.authorized_keys_dir / login).write_text((root / "upstream_key.pub").read_text())
        config = write_config(root, port, target, login, extra, server, host)
        key = root / "alice"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        run_bastion("cert", "issue", "-c", str(config), "--user", "alice", "--group", "dev", "--pubkey", f"{key}.pub")
        ssh_config = write_ssh_config(root, port, "alice", key, init["known_hosts"])
    except BaseException:
        target.stop()
        raise
    env = BastionEnv(root, config, port, target, login, key, ssh_config)
    try:
        env.start()
    except BaseException:
        env.close()  # a bastion that never listened is stopped too, with the target
        raise
    return env


@contextlib.contextmanager
def running_env(extra: str = "", server: str = "", host: str = "") -> Iterator[BastionEnv]:
    """A bastion and its target in a folder of their own, stopped and removed afterwards.

    `extra` is appended to its bastion.toml (issuers, rules, masking); `server`, to its [server] table;
    `host`, to the table of its host `mcp-host` (such as `[[hosts.mcp]]` entries).
    """
    # Not under pytest's 0700 tmp folder: sshd reads authorized_keys as the target's login.
    root = Path(tempfile.mkdtemp(prefix="bastion-test-"))
    try:
        os.chmod(root, 0o755)
        environment = make_env(root, extra, server, host)
        try:
            yield environment
        finally:
            environment.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def env() -> Iterator[BastionEnv]:
    with running_env() as environment:
        yield environment
