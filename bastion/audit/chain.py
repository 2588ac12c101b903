"""Hashes, seals and checkpoints: the pure core of tamper evidence.

* Session events are hash-chained: each event's hash covers its session id, sequence number,
  timestamp (whole microseconds), type, data and the previous event's hash.
* A seal is a signed statement of a finished session: metadata, event count and last hash.
* The global audit log is a Merkle tree with RFC 6962 hashing, so that inclusion and consistency
  proofs are possible; its signed checkpoints are C2SP tlog-checkpoint signed notes (Ed25519).
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

GENESIS = bytes(32)
ED25519_ALG = b"\x01"  # signed-note signature type of Ed25519  # the "previous hash" of a session's first event


def _field(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def micros(ts: float) -> int:
    return round(ts * 1_000_000)


def event_hash(session_id: str, seq: int, ts: float, type_: str, data: bytes, prev: bytes) -> bytes:
    """SHA-256 over a length-prefixed encoding; unambiguous for any bytes in any field."""
    digest = hashlib.sha256()
    digest.update(_field(session_id.encode()))
    digest.update(struct.pack(">Qq", seq, micros(ts)))
    digest.update(_field(type_.encode()))
    digest.update(_field(data))
    digest.update(prev)
    return digest.digest()


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# RFC 6962 Merkle tree hashing.
def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def audit_entry(seq: int, ts: float, type_: str, fields: str) -> bytes:
    """The bytes of one audit-log entry, as they are hashed into the tree."""
    return struct.pack(">Qq", seq, micros(ts)) + _field(type_.encode()) + _field(fields.encode())


def _split(n: int) -> int:
    """The largest power of two smaller than n (RFC 6962 §2.1)."""
    k = 1
    while k << 1 < n:
        k <<= 1
    return k


def merkle_root(leaves: list[bytes]) -> bytes:
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return node_hash(merkle_root(leaves[:k]), merkle_root(leaves[k:]))


class MerkleFrontier:
    """The root of a growing tree in O(log n) memory: the roots of its perfect subtrees."""

    def __init__(self) -> None:
        self.size = 0
        self._peaks: list[tuple[int, bytes]] = []  # (height, hash), tallest first

    def append(self, leaf: bytes) -> None:
        height, node = 0, leaf
        while self._peaks and self._peaks[-1][0] == height:
            _, left = self._peaks.pop()
            node, height = node_hash(left, node), height + 1
        self._peaks.append((height, node))
        self.size += 1

    def root(self) -> bytes:
        if not self._peaks:
            return hashlib.sha256(b"").digest()
        node = self._peaks[-1][1]
        for _, left in reversed(self._peaks[:-1]):
            node = node_hash(left, node)
        return node


def inclusion_proof(index: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 6962 §2.1.1 audit path of leaf `index` in the tree of `leaves`."""
    if len(leaves) <= 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return [*inclusion_proof(index, leaves[:k]), merkle_root(leaves[k:])]
    return [*inclusion_proof(index - k, leaves[k:]), merkle_root(leaves[:k])]


def verify_inclusion(index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2."""
    if index >= size:
        return False
    fn, sn, node = index, size - 1, leaf
    for sibling in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            node = node_hash(sibling, node)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn, sn = fn >> 1, sn >> 1
        else:
            node = node_hash(node, sibling)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and node == root


# Signed notes (C2SP signed-note) with Ed25519 keys, and tlog checkpoints in them.
@dataclass(frozen=True, slots=True)
class NoteKey:
    """An Ed25519 note key: a name and a public key, identified by a 4-byte key hash."""

    name: str
    public: Ed25519PublicKey

    @property
    def raw(self) -> bytes:
        return self.public.public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def key_hash(self) -> bytes:
        return hashlib.sha256(self.name.encode() + b"\n\x01" + self.raw).digest()[:4]

    def verifier_key(self) -> str:
        """'<name>+<hash hex>+<base64(0x01 || key)>', as Go's note.NewVerifier reads it."""
        data = base64.b64encode(ED25519_ALG + self.raw).decode()
        return f"{self.name}+{self.key_hash.hex()}+{data}"

    def fingerprint(self) -> str:
        return "SHA256:" + base64.b64encode(hashlib.sha256(self.raw).digest()).decode().rstrip("=")

    @classmethod
    def from_verifier_key(cls, text: str) -> NoteKey:
        name, hash_hex, data = text.strip().split("+", 2)
        raw = base64.b64decode(data, validate=True)
        if raw[:1] != b"\x01" or len(raw) != 33:
            raise ValueError("not an Ed25519 note verifier key")
        key = cls(name, Ed25519PublicKey.from_public_bytes(raw[1:]))
        if key.key_hash.hex() != hash_hex:
            raise ValueError("verifier key hash does not match the key")
        return key


class NoteError(ValueError):
    """A note that does not verify; the message says why in one line."""


def sign_note(text: str, name: str, private: Ed25519PrivateKey) -> str:
    if not text.endswith("\n"):
        raise ValueError("note text must end with a newline")
    key = NoteKey(name, private.public_key())
    signature = base64.b64encode(key.key_hash + private.sign(text.encode())).decode()
    return f"{text}\n\u2014 {name} {signature}\n"


def open_note(note: str, key: NoteKey) -> str:
    """Verify a signed note with `key`; return its text, or raise NoteError."""
    text, sep, signatures = note.rpartition("\n\n")
    if not sep:
        raise NoteError("malformed note: no blank line before the signatures")
    text += "\n"
    for line in signatures.splitlines():
        if not line.startswith("\u2014 "):
            raise NoteError("malformed signature line")
        name, _, b64 = line[2:].partition(" ")
        try:
            blob = base64.b64decode(b64, validate=True)
        except ValueError:
            raise NoteError("malformed signature") from None
        if name != key.name or blob[:4] != key.key_hash:
            continue
        try:
            key.public.verify(blob[4:], text.encode())
        except InvalidSignature:
            raise NoteError(f"signature by {name} does not verify: the note was altered") from None
        return text
    raise NoteError(f"no signature by key {key.name} ({key.fingerprint()}): signed by another key")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def text(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        lines = text.split("\n")
        if len(lines) < 4 or not lines[1].isdigit():
            raise NoteError("malformed checkpoint")
        try:
            root = base64.b64decode(lines[2], validate=True)
        except ValueError:
            raise NoteError("malformed checkpoint root hash") from None
        return cls(lines[0], int(lines[1]), root)


def sign_seal(body: dict[str, Any], private: Ed25519PrivateKey) -> str:
    return base64.b64encode(private.sign(canonical_json(body))).decode()


def seal_valid(body: dict[str, Any], signature: str, public: Ed25519PublicKey) -> bool:
    try:
        public.verify(base64.b64decode(signature, validate=True), canonical_json(body))
        return True
    except (InvalidSignature, ValueError):
        return False
