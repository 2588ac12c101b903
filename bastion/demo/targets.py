"""Local demo targets: Debian's OpenSSH sshd on a loopback port, with its own config.

Used by `bastion demo` and by the tests. Each target trusts the bastion's upstream CA through
TrustedUserCAKeys, and its host key is written to a known_hosts file for the bastion to verify.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
DEMO_LOGIN = "mcp"


class TargetError(Exception):
    """A demo target could not be started; the message says what to install or fix."""


def ensure_login(name: str = DEMO_LOGIN) -> str:
    """Make sure a local account exists for the demo login (needs root); return the login to use."""
    try:
        pwd.getpwnam(name)
        return name
    except KeyError:
        pass
    if os.geteuid() != 0:
        return pwd.getpwuid(os.getuid()).pw_name
    subprocess.run(
        ["useradd", "--create-home", "--shell", "/bin/bash", "--password", "*", name], check=True, capture_output=True
    )
    return name


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class TargetSshd:
    """One sshd on 127.0.0.1:port, configured from files under `directory`."""

    name: str
    directory: Path
    trusted_ca: Path
    port: int = 0
    extra_config: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def host_key_path(self) -> Path:
        return self.directory / "ssh_host_ed25519_key"

    @property
    def authorized_keys_dir(self) -> Path:
        return self.directory / "authorized_keys"

    def host_public_key(self) -> str:
        """'ssh-ed25519 AAAA...' without the comment."""
        return " ".join(self.host_key_path.with_suffix(".pub").read_text().split()[:2])

    def known_hosts_line(self) -> str:
        return f"[127.0.0.1]:{self.port} {self.host_public_key()}"

    def start(self, timeout: float = 10.0) -> TargetSshd:
        if not Path(SSHD).exists():
            raise TargetError("sshd not found; install Debian's openssh-server (apt-get install openssh-server)")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.authorized_keys_dir.mkdir(exist_ok=True)
        if not self.host_key_path.exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", self.name, "-f", str(self.host_key_path)],
                check=True,
            )
        self.port = self.port or free_port()
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
        config = self.directory / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.host_key_path}",
                    f"PidFile {self.directory / 'sshd.pid'}",
                    f"TrustedUserCAKeys {self.trusted_ca}",
                    f"AuthorizedKeysFile {self.authorized_keys_dir}/%u",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "UsePAM yes",
                    "StrictModes no",
                    "AcceptEnv LANG LC_* TERM COLORTERM TZ",
                    "Subsystem sftp internal-sftp",
                    "PrintMotd no",
                    "LogLevel VERBOSE",
                    *self.extra_config,
                ]
            )
            + "\n"
        )
        with open(self.directory / "sshd.log", "ab") as log:  # the child has its own copy of the descriptor
            self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise TargetError(f"sshd for {self.name} exited: see {self.directory / 'sshd.log'}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    if sock.recv(4).startswith(b"SSH-"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TargetError(f"sshd for {self.name} did not listen on 127.0.0.1:{self.port} within {timeout:.0f}s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
