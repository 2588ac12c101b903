"""The key that grant windows are hashed with: a grant covers an action as typed, which may hold a secret,
so only a keyed hash of it is stored, and a short secret cannot be found by hashing guesses."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from bastion.control.actions import Action, action_key
from bastion.control.approvals import ApprovalError

GRANT_SECRET_FILE = "grant.key"


class GrantKey:
    """HMAC-SHA256 of an action's key (`action_key`) under a 32-byte secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) != 32:
            raise ValueError("a grant key is 32 bytes")
        self._secret = secret

    @classmethod
    def load(cls, state_dir: Path) -> GrantKey:
        return cls(load_grant_secret(state_dir))

    def of(self, action: Action) -> str:
        digest = hmac.new(self._secret, action_key(action).encode(), hashlib.sha256).hexdigest()
        return "hmac-sha256:" + digest


def load_grant_secret(directory: Path) -> bytes:
    """The key that grant windows are hashed with: 32 random bytes in a 0600 file in `directory` (the state
    directory), made on first use (written aside, then linked into place, so two processes agree on one)."""
    path = directory / GRANT_SECRET_FILE
    if not path.exists():
        aside = directory / f".{GRANT_SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(secrets.token_bytes(32))
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)
        aside.unlink()
    if path.stat().st_mode & 0o077:
        raise ApprovalError(f"{path}: the key is readable by others; run chmod 600 {path}")
    secret = path.read_bytes()
    if len(secret) != 32:
        raise ApprovalError(f"{path}: expected a 32-byte key; remove the file to have a new one made")
    return secret
