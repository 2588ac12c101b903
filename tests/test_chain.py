"""The pure core of tamper evidence: event hashes, RFC 6962 trees, signed notes, seals."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from bastion.audit import chain

# The published example of golang.org/x/mod/sumdb/note (the reference signed-note implementation).
GO_SIGNER = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VERIFIER = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_SIGNATURE = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
)


def test_signed_note_matches_the_reference_implementations_example() -> None:
    seed = base64.b64decode(GO_SIGNER.split("+", 4)[4])[1:]
    note = chain.sign_note(GO_TEXT, "PeterNeumann", Ed25519PrivateKey.from_private_bytes(seed))
    assert note == GO_TEXT + "\n" + GO_SIGNATURE + "\n"
    key = chain.NoteKey.from_verifier_key(GO_VERIFIER)
    assert key.verifier_key() == GO_VERIFIER
    assert chain.open_note(note, key) == GO_TEXT


def test_altered_note_and_foreign_key_are_refused() -> None:
    key = chain.NoteKey.from_verifier_key(GO_VERIFIER)
    with pytest.raises(chain.NoteError, match="altered"):
        chain.open_note((GO_TEXT + "\n" + GO_SIGNATURE + "\n").replace("problem,", "problem;"), key)
    other = chain.sign_note(GO_TEXT, "PeterNeumann", Ed25519PrivateKey.generate())
    with pytest.raises(chain.NoteError, match="another key"):
        chain.open_note(other, key)


def test_checkpoint_text_is_the_tlog_checkpoint_format() -> None:
    point = chain.Checkpoint("example.com/log", 7, bytes(range(32)))
    assert point.text() == "example.com/log\n7\n" + base64.b64encode(bytes(range(32))).decode() + "\n"
    assert chain.Checkpoint.parse(point.text()) == point


def test_rfc6962_hashes() -> None:
    assert chain.merkle_root([]) == hashlib.sha256(b"").digest()
    a, b, c = (chain.leaf_hash(x) for x in (b"a", b"b", b"c"))
    assert a == hashlib.sha256(b"\x00a").digest()
    assert chain.merkle_root([a, b, c]) == chain.node_hash(chain.node_hash(a, b), c)


@given(st.lists(st.binary(max_size=8), min_size=1, max_size=40), st.data())
def test_frontier_and_inclusion_proofs_agree_with_the_definition(entries: list[bytes], data: st.DataObject) -> None:
    leaves = [chain.leaf_hash(e) for e in entries]
    frontier = chain.MerkleFrontier()
    for i, leaf in enumerate(leaves):
        frontier.append(leaf)
        assert frontier.root() == chain.merkle_root(leaves[: i + 1])
    index = data.draw(st.integers(0, len(leaves) - 1))
    root = chain.merkle_root(leaves)
    proof = chain.inclusion_proof(index, leaves)
    assert chain.verify_inclusion(index, len(leaves), leaves[index], proof, root)
    assert not chain.verify_inclusion(index, len(leaves), chain.leaf_hash(b"forged"), proof, root)


def test_event_hash_covers_every_field() -> None:
    base = ("s1", 1, 1700000000.123456, "stdout", b"hello", chain.GENESIS)
    digest = chain.event_hash(*base)
    for i, changed in enumerate(["s2", 2, 1700000000.123457, "stderr", b"hellO", b"\x01" * 32]):
        args = list(base)
        args[i] = changed
        assert chain.event_hash(*args) != digest


def test_seal_signature() -> None:
    key = Ed25519PrivateKey.generate()
    body = {"id": "s1", "events": 3, "last_hash": "ab"}
    signature = chain.sign_seal(body, key)
    assert chain.seal_valid(body, signature, key.public_key())
    assert not chain.seal_valid({**body, "events": 2}, signature, key.public_key())
    assert not chain.seal_valid(body, signature, Ed25519PrivateKey.generate().public_key())
