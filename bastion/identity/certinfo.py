"""Reads the fields of an OpenSSH certificate from its wire bytes (PROTOCOL.certkeys).

asyncssh checks a certificate's signature but keeps its serial and key id private; reading them
here, from the same bytes the client presented, keeps the identity independent of its internals.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

USER = 1
HOST = 2

# Public-key fields that precede the serial, per certificate type (PROTOCOL.certkeys).
_KEY_FIELDS = {
    "ssh-ed25519-cert-v01@openssh.com": 1,
    "ssh-rsa-cert-v01@openssh.com": 2,
    "ecdsa-sha2-nistp256-cert-v01@openssh.com": 2,
    "ecdsa-sha2-nistp384-cert-v01@openssh.com": 2,
    "ecdsa-sha2-nistp521-cert-v01@openssh.com": 2,
    "sk-ssh-ed25519-cert-v01@openssh.com": 2,
    "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com": 3,
}


class CertificateFormatError(ValueError):
    """The bytes are not an OpenSSH certificate this bastion understands."""


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    key_type: str
    serial: int
    cert_type: int
    key_id: str
    principals: tuple[str, ...]
    valid_after: int
    valid_before: int
    critical_options: tuple[str, ...]
    extensions: tuple[str, ...]
    signature_key: bytes  # wire encoding of the CA's public key


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise CertificateFormatError("certificate is truncated")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def uint32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def uint64(self) -> int:
        return int(struct.unpack(">Q", self.take(8))[0])

    def string(self) -> bytes:
        return self.take(self.uint32())

    def names(self, blob: bytes, paired: bool) -> tuple[str, ...]:
        inner, out = _Reader(blob), []
        while inner.pos < len(blob):
            out.append(inner.string().decode("utf-8", "replace"))
            if paired:
                inner.string()
        return tuple(out)


def is_certificate(key_data: bytes) -> bool:
    try:
        return _Reader(key_data).string().decode("ascii", "replace") in _KEY_FIELDS
    except CertificateFormatError:
        return False


def parse_certificate(key_data: bytes) -> CertificateInfo:
    """Parse a certificate's wire bytes; raise CertificateFormatError on anything else."""
    reader = _Reader(key_data)
    key_type = reader.string().decode("ascii", "replace")
    fields = _KEY_FIELDS.get(key_type)
    if fields is None:
        raise CertificateFormatError(f"not an OpenSSH certificate type: {key_type[:64]!r}")
    reader.string()  # nonce
    for _ in range(fields):
        reader.string()
    serial = reader.uint64()
    cert_type = reader.uint32()
    key_id = reader.string().decode("utf-8", "replace")
    principals = reader.names(reader.string(), paired=False)
    valid_after, valid_before = reader.uint64(), reader.uint64()
    critical = reader.names(reader.string(), paired=True)
    extensions = reader.names(reader.string(), paired=True)
    reader.string()  # reserved
    signature_key = reader.string()
    return CertificateInfo(
        key_type,
        serial,
        cert_type,
        key_id,
        principals,
        valid_after,
        valid_before,
        critical,
        extensions,
        signature_key,
    )
