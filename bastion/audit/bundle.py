"""Evidence bundle: one self-contained file that proves one session's recording on another machine.

It holds the recording (every event with its hashes), the signed seal, the audit-log entry that
recorded the seal with its Merkle inclusion proof, a signed checkpoint covering that entry, and the
audit public key with its fingerprint. `verify_bundle` needs nothing else.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_ssh_public_key

from bastion.audit import chain
from bastion.audit.events import ChainedEvent
from bastion.audit.seal import seal_digest
from bastion.storage import Store

FORMAT = "mcp-bastion-evidence/1"


class BundleError(ValueError):
    """The bundle cannot be made or does not verify; one line."""


def export_bundle(store: Store, session_id: str, public: Ed25519PublicKey, origin: str) -> dict[str, Any]:
    info = store.session(session_id)
    if info is None:
        raise BundleError(f"no session {session_id!r}")
    sealed = store.seal(info.id)
    if sealed is None:
        raise BundleError(f"session {info.id} is not sealed yet (still live?)")
    entries = list(store.audit_entries())
    body, signature = sealed
    digest = seal_digest(body, signature)
    entry = next(
        (e for e in entries if e["type"] == "session.end" and json.loads(e["fields"]).get("seal") == digest), None
    )
    if entry is None:
        raise BundleError(f"session {info.id}: its seal is not in the audit log")
    point = next((cp for cp in store.checkpoints() if cp["size"] > entry["seq"]), None)
    if point is None:
        raise BundleError(f"no checkpoint covers session {info.id} yet; try again after the next checkpoint")
    leaves = [e["leaf_hash"] for e in entries[: point["size"]]]
    session = asdict(info)
    session["groups"] = list(info.groups)
    return {
        "format": FORMAT,
        "session": session,
        "events": [
            {
                "seq": e.seq,
                "ts": e.ts,
                "type": e.type,
                "data": base64.b64encode(e.data).decode(),
                "prev_hash": e.prev_hash.hex(),
                "hash": e.hash.hex(),
            }
            for e in store.events(info.id)
        ],
        "seal": {"body": body, "signature": signature},
        "log_entry": {k: entry[k] for k in ("seq", "ts", "type", "fields")},
        "inclusion_proof": [h.hex() for h in chain.inclusion_proof(entry["seq"], leaves)],
        "checkpoint": point["note"],
        "public_key": "ssh-ed25519 " + _openssh_blob(public),
        "fingerprint": chain.NoteKey(origin, public).fingerprint(),
        "origin": origin,
    }


def _openssh_blob(public: Ed25519PublicKey) -> str:
    return public.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode().split()[1]


def verify_bundle(bundle: dict[str, Any], public: Ed25519PublicKey | None = None) -> str:
    """Raise BundleError with the first problem; return a one-line summary when it verifies."""
    if not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
        raise BundleError(f"not an evidence bundle of format {FORMAT}")
    embedded = load_ssh_public_key(bundle["public_key"].encode())
    if not isinstance(embedded, Ed25519PublicKey):
        raise BundleError("the bundle's public key is not Ed25519")
    if public is not None and _openssh_blob(public) != _openssh_blob(embedded):
        raise BundleError("the bundle was signed by another key than the one given with --pubkey")
    key = chain.NoteKey(bundle["origin"], public or embedded)
    sid = bundle["session"]["id"]
    events = [
        ChainedEvent(
            sid,
            e["seq"],
            e["ts"],
            e["type"],
            base64.b64decode(e["data"]),
            bytes.fromhex(e["prev_hash"]),
            bytes.fromhex(e["hash"]),
        )
        for e in bundle["events"]
    ]
    from bastion.audit.verify import verify_events

    count, head, problem = verify_events(sid, events)
    if problem:
        raise BundleError(problem)
    body, signature = bundle["seal"]["body"], bundle["seal"]["signature"]
    if not chain.seal_valid(body, signature, key.public):
        raise BundleError(f"session {sid}: seal does not verify with the audit key")
    if (count, head.hex()) != (body["events"], body["last_hash"]):
        raise BundleError(f"session {sid}: recording ({count} events) does not match its seal ({body['events']})")
    for name, value in body.items():
        if name not in ("events", "last_hash") and bundle["session"].get(name) != value:
            raise BundleError(f"session {sid}: metadata {name!r} differs from the seal")
    entry = bundle["log_entry"]
    if entry["type"] != "session.end" or json.loads(entry["fields"]).get("seal") != seal_digest(body, signature):
        raise BundleError(f"session {sid}: the audit-log entry does not record this seal")
    try:
        point = chain.Checkpoint.parse(chain.open_note(bundle["checkpoint"], key))
    except chain.NoteError as exc:
        raise BundleError(f"checkpoint: {exc}") from None
    leaf = chain.leaf_hash(chain.audit_entry(entry["seq"], entry["ts"], entry["type"], entry["fields"]))
    proof = [bytes.fromhex(h) for h in bundle["inclusion_proof"]]
    if not chain.verify_inclusion(entry["seq"], point.size, leaf, proof, point.root):
        raise BundleError(f"session {sid}: the seal's log entry is not in the signed checkpoint")
    return f"session {sid}: {count} events, seal and checkpoint (size {point.size}) verify; key {key.fingerprint()}"
