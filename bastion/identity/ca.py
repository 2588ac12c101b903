"""The bastion's keys: user, host and upstream certificate authorities and the audit key.

The state directory is 0700 and every private key 0600. `Authorities.init` is idempotent: it
creates what is missing and never replaces an existing key.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from bastion.identity.certinfo import USER, CertificateInfo

KEY_NAMES = ("user_ca", "host_ca", "upstream_ca", "audit", "host_key")
# What a user certificate (a person's, or the bastion's own upstream one) permits: a pty and
# port forwarding (for MCP over ssh -L); never agent or X11 forwarding, never ~/.ssh/rc.
USER_PERMISSIONS: dict[str, Any] = {
    "permit_x11_forwarding": False,
    "permit_agent_forwarding": False,
    "permit_port_forwarding": True,
    "permit_pty": True,
    "permit_user_rc": False,
}
CLOCK_SKEW = 60  # seconds a certificate may be "not yet valid" by, as OpenSSH allows for clocks


class CertificateRejected(Exception):
    """A presented certificate that must not be accepted; the message says why, in one line."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is on a connection, as proven by the certificate presented on it."""

    user: str
    groups: tuple[str, ...]
    serial: int
    key_id: str
    workload: bool = False  # issued for a workload (an agent, CI): never an approver


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    certificate: asyncssh.SSHCertificate
    serial: int
    key_id: str
    valid_after: int
    valid_before: int

    def openssh(self) -> bytes:
        return bytes(self.certificate.export_certificate())


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def new_serial() -> int:
    """A random 63-bit serial: unique without a counter shared between processes."""
    return secrets.randbits(63) or 1


class Authorities:
    """The keys under a state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.user_ca = self._load("user_ca")
        self.host_ca = self._load("host_ca")
        self.upstream_ca = self._load("upstream_ca")
        self.audit = self._load("audit")
        self.host_key = self._load("host_key")
        self._host_certs: dict[str, asyncssh.SSHCertificate] = {}

    @staticmethod
    def is_initialised(state_dir: Path) -> bool:
        return all((state_dir / name).is_file() for name in KEY_NAMES)

    @staticmethod
    def init(state_dir: Path) -> list[str]:
        """Create the state directory and missing keys; return the names created."""
        state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(state_dir, 0o700)
        created = []
        for name in KEY_NAMES:
            private = state_dir / name
            if private.exists():
                os.chmod(private, 0o600)
                continue
            key = asyncssh.generate_private_key("ssh-ed25519", comment=f"bastion {name}")
            _write_private(private, bytes(key.export_private_key()))
            (state_dir / f"{name}.pub").write_bytes(bytes(key.export_public_key()))
            created.append(name)
        return created

    def _load(self, name: str) -> asyncssh.SSHKey:
        path = self.state_dir / name
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise PermissionError(f"{path}: private key is readable by others (mode {mode:o}); run chmod 600 {path}")
        return asyncssh.read_private_key(str(path))

    # Lines for the people and machines that trust these authorities.
    def known_hosts_line(self, pattern: str = "*") -> str:
        return f"@cert-authority {pattern} {self.host_ca.export_public_key().decode().strip()}"

    def trusted_user_ca_line(self) -> str:
        return self.upstream_ca.export_public_key().decode().strip()

    # Issuance.
    def issue_user(
        self, public_key: asyncssh.SSHKey, user: str, ttl: float, *, now: float | None = None
    ) -> IssuedCertificate:
        if not user:
            raise ValueError("a user certificate needs a user name")
        now = time.time() if now is None else now
        serial = new_serial()
        key_id = f"user={user} serial={serial}"
        valid_after, valid_before = int(now) - CLOCK_SKEW, int(now + ttl)
        cert = self.user_ca.generate_user_certificate(
            public_key,
            key_id,
            serial=serial,
            principals=[user],
            valid_after=valid_after,
            valid_before=valid_before,
            **USER_PERMISSIONS,
        )
        return IssuedCertificate(cert, serial, key_id, valid_after, valid_before)

    def host_certificate(self, name: str) -> asyncssh.SSHCertificate:
        """The host certificate the bastion presents as `name` (cached; valid for a week)."""
        cert = self._host_certs.get(name)
        if cert is None:
            now = int(time.time())
            cert = self.host_ca.generate_host_certificate(
                self.host_key,
                f"bastion as {name}",
                serial=new_serial(),
                principals=[name],
                valid_after=now - CLOCK_SKEW,
                valid_before=now + 7 * 86400,
            )
            self._host_certs[name] = cert
        return cert

    def outer_host_certificate(self, names: tuple[str, ...]) -> asyncssh.SSHCertificate:
        now = int(time.time())
        return self.host_ca.generate_host_certificate(
            self.host_key,
            "bastion",
            serial=new_serial(),
            principals=list(names),
            valid_after=now - CLOCK_SKEW,
            valid_before=now + 365 * 86400,
        )

    def upstream_credential(
        self, login: str, user: str, session_id: str, ttl: float
    ) -> tuple[asyncssh.SSHKey, asyncssh.SSHCertificate]:
        """A fresh key and a certificate for one upstream connection, naming the real user."""
        key = asyncssh.generate_private_key("ssh-ed25519")
        now = int(time.time())
        cert = self.upstream_ca.generate_user_certificate(
            key,
            f"bastion user={user} session={session_id}",
            serial=new_serial(),
            principals=[login],
            valid_after=now - CLOCK_SKEW,
            valid_before=now + int(ttl),
            **USER_PERMISSIONS,
        )
        return key, cert

    def check_user_certificate(self, info: CertificateInfo, username: str, now: float) -> None:
        """Refuse what asyncssh would let through or says nothing about; raise CertificateRejected."""
        if info.cert_type != USER:
            raise CertificateRejected("not a user certificate")
        if info.signature_key != self.user_ca.public_data:
            raise CertificateRejected("certificate is not signed by this bastion's user CA")
        if not info.principals:
            raise CertificateRejected("certificate has no principals")
        if username not in info.principals:
            raise CertificateRejected(f"certificate is not valid for user {username!r}")
        if now + CLOCK_SKEW < info.valid_after:
            raise CertificateRejected("certificate is not yet valid")
        if now >= info.valid_before:
            raise CertificateRejected("certificate has expired; log in again")
        if info.critical_options:
            raise CertificateRejected(f"unsupported critical options: {', '.join(info.critical_options)}")
