"""The development IdP's signing key: one RSA key (RS256), made at start or kept in a PEM file, published as JWKS."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import KeySet, RSAKey

from bastion.demo.devidp.directory import DevIdpError

ALGORITHM = "RS256"
_PARAMETERS: Any = {"use": "sig", "alg": ALGORITHM}


class SigningKey:
    """An RSA private key with a `kid` (its RFC 7638 thumbprint), so that a rotated key gets a new kid."""

    def __init__(self, key: RSAKey) -> None:
        if not key.is_private:
            raise DevIdpError("the signing key must be an RSA private key")
        key.ensure_kid()
        self.key = key
        self.key_set = KeySet([key])

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(RSAKey.generate_key(2048, parameters=_PARAMETERS, private=True))

    @classmethod
    def from_file(cls, path: Path, create: bool = True) -> SigningKey:
        """Load a PEM RSA private key; with `create`, a missing file is made (0600) with a new key."""
        if not path.exists() and create:
            key = cls.generate()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(key.key.as_pem(private=True))
            return key
        try:
            return cls(RSAKey.import_key(path.read_bytes(), parameters=_PARAMETERS))
        except OSError as exc:
            raise DevIdpError(f"{path}: cannot read the signing key: {exc.strerror}") from None
        except (JoseError, ValueError, TypeError):
            raise DevIdpError(f"{path}: not a PEM RSA private key; remove the file to have a new key made") from None

    @property
    def kid(self) -> str:
        return str(self.key.kid)

    def jwks(self) -> dict[str, Any]:
        """The public JWKS document served at /jwks."""
        return dict(self.key_set.as_dict(private=False))
