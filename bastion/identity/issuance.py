"""Issuing a user certificate: sign, record it under its serial (with the groups), audit, write."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import asyncssh

from bastion.config import LOGIN_NAME, Settings
from bastion.identity.ca import Authorities
from bastion.storage import Store


class IssuanceError(ValueError):
    """A certificate that must not be issued; the message is one line."""


def issue_certificate(
    settings: Settings,
    store: Store,
    authorities: Authorities,
    user: str,
    groups: tuple[str, ...],
    ttl: float,
    public_key: asyncssh.SSHKey,
    output: Path | None,
    *,
    source: str,
    issuer: str = "operator",
    **event_fields: Any,
) -> tuple[dict[str, Any], bytes]:
    """Sign, record (durably, before the certificate is handed out), audit and write a certificate.

    Blocks until the store has committed the record (call it off the event loop). Returns the
    record and the certificate in OpenSSH format; `output`, if given, receives the certificate.
    """
    if not LOGIN_NAME.match(user):
        raise IssuanceError(f"expected a login name such as 'alice', got {user!r}")
    if ttl > settings.certificates.max_ttl:
        raise IssuanceError(
            f"validity {ttl:.0f}s is longer than [certificates] max_ttl ({settings.certificates.max_ttl:.0f}s)"
        )
    issued = authorities.issue_user(public_key, user, ttl)
    record = {
        "serial": issued.serial,
        "user": user,
        "groups": tuple(groups),
        "key_id": issued.key_id,
        "principals": (user,),
        "valid_after": issued.valid_after,
        "valid_before": issued.valid_before,
        "fingerprint": public_key.get_fingerprint(),
        "issuer": issuer,
        "source": source,
        "issued_at": time.time(),
    }
    store.record_certificate(record).result()
    store.log("cert.issued", **{k: v for k, v in record.items() if k != "principals"}, **event_fields).result()
    certificate = issued.openssh()
    if output is not None:
        output.write_bytes(certificate)
    return record, certificate
