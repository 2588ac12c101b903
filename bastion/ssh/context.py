"""What every connection handler shares: settings, keys, the store, and the live connections."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import asyncssh

from bastion.audit.seal import Sealer
from bastion.audit.store import Store
from bastion.config import Settings
from bastion.identity.ca import Authorities


@dataclass
class BastionContext:
    settings: Settings
    authorities: Authorities
    store: Store
    sealer: Sealer
    live: set[Any] = field(default_factory=set)  # outer connections, for shutdown and revocation
    recordings: set[Any] = field(default_factory=set)  # live session recordings, for log progress entries

    def audit(self, type_: str, **fields: Any) -> None:
        """Log one structured line and append the same event to the audit log."""
        from bastion.logs import log

        log(type_, **fields)
        self.store.log(type_, **fields)


# AES-GCM only: one OpenSSL call per packet (AES-NI) where asyncssh's chacha20-poly1305 builds
# several cipher contexts per packet; measured 8 GB/s against 1.9 GB/s for 32 KiB packets, and
# ~3x the bastion's throughput. Every OpenSSH since 6.2 offers it; it is also the FIPS-approved AEAD.
CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def server_options(**options: Any) -> asyncssh.SSHServerConnectionOptions:
    """Options every server of the bastion shares: nothing offered that it does not mediate."""
    return asyncssh.SSHServerConnectionOptions(
        allow_pty=True,
        line_editor=False,  # bytes pass through untouched (DESIGN §5)
        agent_forwarding=False,
        x11_forwarding=False,
        allow_scp=False,
        sftp_factory=None,
        encryption_algs=CIPHERS,
        config=None,
        encoding=None,
        **options,
    )


def new_connection_id() -> str:
    return secrets.token_hex(6)
