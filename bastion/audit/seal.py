"""Sealing with the audit key: session seals, retention tombstones and log checkpoints."""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

from bastion.audit import chain
from bastion.audit.events import SessionInfo

DEFAULT_ORIGIN = "mcp-bastion/audit"
SEALED_FIELDS = (
    "id",
    "connection_id",
    "user",
    "groups",
    "cert_serial",
    "cert_key_id",
    "source",
    "target",
    "target_address",
    "login",
    "kind",
    "command",
    "started_at",
    "ended_at",
    "exit_status",
    "exit_signal",
    "bytes_in",
    "bytes_out",
    "end_reason",
    "status",
)


def load_public_key(path: Path) -> Ed25519PublicKey:
    """The audit public key, from an OpenSSH public key file (audit.pub) or a note verifier key."""
    text = path.read_text().strip()
    if text.startswith("ssh-ed25519 "):
        key = load_ssh_public_key(text.encode())
    else:
        key = chain.NoteKey.from_verifier_key(text).public
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 key")
    return key


def seal_digest(body: dict[str, Any], signature: str) -> str:
    """What the audit log records of a seal, so a replaced seal no longer matches the log."""
    return hashlib.sha256(chain.canonical_json({"body": body, "signature": signature})).hexdigest()


def seal_body(info: SessionInfo, events: int, last_hash: bytes) -> dict[str, Any]:
    values = asdict(info)
    body = {name: values[name] for name in SEALED_FIELDS}
    body["groups"] = list(info.groups)
    body.update(events=events, last_hash=last_hash.hex())
    return body


class Sealer:
    """Holds the audit signing key (never leaves the bastion host)."""

    def __init__(self, private: Ed25519PrivateKey, origin: str = DEFAULT_ORIGIN) -> None:
        self.private = private
        self.origin = origin

    @classmethod
    def from_state_dir(cls, state_dir: Path, origin: str = DEFAULT_ORIGIN) -> Sealer:
        key = load_ssh_private_key((state_dir / "audit").read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{state_dir / 'audit'}: the audit key must be Ed25519")
        return cls(key, origin)

    def sign(self, body: dict[str, Any]) -> str:
        return chain.sign_seal(body, self.private)

    @property
    def note_key(self) -> chain.NoteKey:
        return chain.NoteKey(self.origin, self.private.public_key())
