"""The processes a throughput run starts and stops: target sshd, bastion serve per masking setting, jump sshd, ssh."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from bastion.demo.targets import TargetSshd, ensure_login, free_port

from . import BenchError
from .cpu import descendants, reap_adopted

SSH = shutil.which("ssh") or "/usr/bin/ssh"
OPENSSH, BASTION, BASTION_OFF = "openssh", "bastion", "bastion-off"  # BASTION: masking on (the default)
DATABASE = {BASTION: "bastion.db", BASTION_OFF: "bastion-off.db"}  # in the shared state directory


def stop_group(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    """SIGTERM a process started with start_new_session=True and its group; SIGKILL if it lingers."""
    if proc is None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            continue


def stop_sshd(sshd: TargetSshd) -> None:
    """Stop an sshd listener and any per-connection sshd processes it forked."""
    if sshd.process is None:
        return
    for pid in descendants(sshd.process.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    sshd.stop()


def wait_exit_unreaped(proc: subprocess.Popen[bytes], deadline: float) -> bool:
    """Wait until proc has exited, leaving it a zombie so that its final CPU time can be read."""
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            return True
        if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        time.sleep(0.005)
    return False


def wait_for_ssh(port: int, proc: subprocess.Popen[bytes], what: str, log_file: Path, timeout: float = 20.0) -> None:
    """Wait until an SSH server answers on 127.0.0.1:port with its banner."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited ({proc.returncode}); see {log_file}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                if sock.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f}s; see {log_file}")


def bastion_cli(config: Path, *args: str) -> str:
    """Run `bastion ARGS -c CONFIG` with this interpreter; return its stdout."""
    result = subprocess.run([sys.executable, "-m", "bastion", *args, "-c", str(config)],
                            capture_output=True, text=True, timeout=60, cwd=config.parent)
    if result.returncode != 0:
        raise BenchError(f"bastion {' '.join(args)} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


class Testbed:
    """All on 127.0.0.1, in root: the target sshd, a bastion per masking setting, the jump sshd, ssh configs.

    The paths are OPENSSH (through the jump sshd) and the bastions given (BASTION: masking on, and/or
    BASTION_OFF); each path has its ssh client configuration with hosts "jump" and "target".
    """

    def __init__(self, root: Path, bastions: tuple[str, ...], host_toml: str = "", rules_toml: str = "") -> None:
        self.root = root
        self.host_toml = host_toml  # more of the target's [[hosts]] table (e.g. [[hosts.mcp]] entries)
        self.rules_toml = rules_toml  # more [[rules]] after the allow-all "bench" rule
        self.bastion_paths = bastions  # BASTION (masking on) and/or BASTION_OFF
        self.paths = (OPENSSH, *bastions)
        self.target: TargetSshd | None = None
        self.jump: TargetSshd | None = None
        self.bastions: dict[str, subprocess.Popen[bytes]] = {}
        self.login = "mcp"
        self.config: dict[str, Path] = {}

    def bastion_toml(self, path: str) -> Path:
        return self.root / ("bastion.toml" if path == BASTION else f"{path}.toml")

    def start(self) -> None:
        """Make the user key, start the target, the jump sshd and the bastions, write the client configs."""
        root = self.root
        root.chmod(0o755)  # the target's login reads data.bin from here
        self.login = ensure_login()
        key = root / "user_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench-user", "-f", str(key)],
                       check=True, timeout=30)
        pubkey = key.with_suffix(".pub").read_text()

        # The bastions' keys first (one state directory, so one upstream CA): the target trusts it.
        server: dict[str, str] = {}
        ports: dict[str, int] = {}
        for path in self.bastion_paths:
            ports[path] = free_port()
            server[path] = (f'[server]\nlisten = "127.0.0.1:{ports[path]}"\nstate_dir = "state"\n'
                            f'database = "state/{DATABASE[path]}"\n')
            self.bastion_toml(path).write_text(server[path])
            init = json.loads(bastion_cli(self.bastion_toml(path), "init", "--json"))
        upstream_ca = root / "upstream_ca.pub"
        upstream_ca.write_text(init["trusted_user_ca_keys"].strip() + "\n")

        self.target = TargetSshd("target", root / "target", upstream_ca)
        self.target.authorized_keys_dir.mkdir(parents=True, exist_ok=True)
        (self.target.authorized_keys_dir / self.login).write_text(pubkey)  # the baseline logs in directly
        self.target.start()
        self.jump = TargetSshd("jump", root / "jump", upstream_ca)
        self.jump.authorized_keys_dir.mkdir(parents=True, exist_ok=True)
        (self.jump.authorized_keys_dir / self.login).write_text(pubkey)
        self.jump.start()

        (root / "target_known_hosts").write_text(self.target.known_hosts_line() + "\n")
        hosts = ("\n[[hosts]]\n"
                 f'name = "target"\naddress = "127.0.0.1:{self.target.port}"\n'
                 f'logins = ["{self.login}"]\nknown_hosts = "target_known_hosts"\n' + self.host_toml
                 + '\n[[rules]]\nname = "bench"\neffect = "allow"\n'  # default deny: allow everything here
                 + self.rules_toml)  # (an allow rule without "what" allows no MCP call: a rule must name it)
        (root / "client_known_hosts.bastion").write_text(init["known_hosts"].strip() + "\n")
        # One client configuration per path; `-F` keeps ~/.ssh/config and /etc/ssh/ssh_config out.
        common = ("Host *\n"
                  f"  IdentityFile {key}\n"
                  "  IdentitiesOnly yes\n  BatchMode yes\n  StrictHostKeyChecking yes\n"
                  "  ControlMaster no\n  ControlPath none\n  Compression no\n  ConnectTimeout 15\n")
        for path in self.bastion_paths:
            toml = self.bastion_toml(path)
            masking = "\n[masking]\npacks = []\n" if path == BASTION_OFF else ""  # on: the default packs
            toml.write_text(server[path] + hosts + masking)
            cert = root / f"user_key-cert.{path}.pub"
            bastion_cli(toml, "cert", "issue", "--user", "alice", "--pubkey", str(key.with_suffix(".pub")),
                        "--output", str(cert))
            serve_log = root / ("serve.log" if path == BASTION else f"serve.{path}.log")
            with open(serve_log, "ab") as out:
                self.bastions[path] = subprocess.Popen([sys.executable, "-m", "bastion", "serve", "-c", str(toml)],
                                                       stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                                       cwd=root, start_new_session=True)
            wait_for_ssh(ports[path], self.bastions[path], f"bastion serve ({path})", serve_log)
            self.config[path] = root / f"ssh_config.{path}"
            self.config[path].write_text(
                f"Host jump\n  HostName 127.0.0.1\n  Port {ports[path]}\n  User alice\n"
                + common + f"  CertificateFile {cert}\n"
                f"  UserKnownHostsFile {root / 'client_known_hosts.bastion'}\n")
        (root / "client_known_hosts.openssh").write_text(
            self.jump.known_hosts_line() + "\n" + self.target.known_hosts_line() + "\n")
        self.config[OPENSSH] = root / "ssh_config.openssh"
        self.config[OPENSSH].write_text(
            f"Host jump\n  HostName 127.0.0.1\n  Port {self.jump.port}\n  User {self.login}\n"
            f"Host target\n  HostName 127.0.0.1\n  Port {self.target.port}\n"
            + common + f"  UserKnownHostsFile {root / 'client_known_hosts.openssh'}\n")

    def stop_bastions(self) -> None:
        for proc in self.bastions.values():
            stop_group(proc)

    def cleanup(self) -> None:
        """Stop every process started, also after a failed start."""
        self.stop_bastions()
        for sshd in (self.jump, self.target):
            if sshd is not None:
                stop_sshd(sshd)
        reap_adopted(set())

    def started(self) -> set[int]:
        procs = [*self.bastions.values(), *(s.process for s in (self.jump, self.target) if s is not None)]
        return {p.pid for p in procs if p is not None}

    def target_pid(self) -> int:
        assert self.target is not None and self.target.process is not None
        return self.target.process.pid

    def hop_pid(self, path: str) -> int:
        proc = self.bastions.get(path) or (self.jump.process if self.jump else None)
        assert proc is not None
        return proc.pid

    def ssh_args(self, path: str | None, command: str, verbose: bool = False) -> list[str]:
        """`ssh -J jump mcp@target COMMAND` for a path; path None: straight to the target (no jump)."""
        jump = ["-J", "jump"] if path is not None else []
        return [SSH, *(["-v"] if verbose else []), "-F", str(self.config[path or OPENSSH]), *jump,
                f"{self.login}@target", command]

    def start_client(self, path: str | None, command: str, stdin: object = subprocess.DEVNULL,
                     verbose: bool = False) -> subprocess.Popen[bytes]:
        """The ssh client for one command, in a session of its own, stdout and stderr piped."""
        return subprocess.Popen(self.ssh_args(path, command, verbose), stdin=stdin, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)  # type: ignore[call-overload]
