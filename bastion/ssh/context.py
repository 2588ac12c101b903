"""What every connection handler shares: settings, keys, the store, and the live connections."""

from __future__ import annotations

import asyncio
import secrets
import weakref
from dataclasses import dataclass, field
from typing import Any

import asyncssh

from bastion.audit.seal import Sealer
from bastion.config import Settings
from bastion.identity.ca import Authorities
from bastion.storage.store import Store


@dataclass
class BastionContext:
    settings: Settings
    authorities: Authorities
    store: Store
    sealer: Sealer
    live: set[Any] = field(default_factory=set)  # outer connections, for shutdown and revocation
    recordings: set[Any] = field(default_factory=set)  # live session recordings, for log progress entries
    bridges: weakref.WeakSet[Any] = field(default_factory=weakref.WeakSet)  # live session bridges
    verifier: Any = None  # TokenVerifier for [[identity.issuers]] (built by serve)
    policy: Any = None  # Policy of [[rules]] (built by serve)
    approvals: Any = None  # Approvals in the store (built by serve)
    masker: Any = None  # Masker of [masking] (built by serve; None: output passes unmasked)

    def audit(self, type_: str, **fields: Any) -> None:
        """Log one structured line and append the same event to the audit log."""
        from bastion.logs import log

        log(type_, **fields)
        self.store.log(type_, **fields)

    def end_sessions_of(self, serials: set[int], reason: str) -> int:
        """End every live session and connection authenticated by one of these certificates."""
        ended = 0
        for bridge in list(self.bridges):
            if bridge.recording.info.cert_serial in serials and not bridge.recording.closed:
                bridge.terminate(reason)
                ended += 1
        loop = asyncio.get_running_loop()
        for server in list(self.live):
            identity = server.conn.identity if server.conn is not None else None
            if identity is not None and identity.serial in serials:  # after the sessions' last words are out
                loop.call_later(0.5 if ended else 0, server.conn.close)
        return ended


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
