"""What every connection handler shares: settings, keys, the store, and the live connections."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

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


def new_connection_id() -> str:
    return secrets.token_hex(6)
