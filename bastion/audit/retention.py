"""Retention: old sessions' events give way to a signed tombstone; the evidence stays verifiable.

The seal and the audit log are kept; the tombstone repeats the seal's event count and last hash,
is signed with the audit key, and its digest enters the audit log, so pruning is itself audited
and a verifier can tell a pruned session from a tampered one.
"""

from __future__ import annotations

import hashlib
import time

from bastion.audit import chain
from bastion.audit.seal import Sealer
from bastion.logs import log
from bastion.storage import Store


def prune(store: Store, sealer: Sealer, older_than: float, now: float | None = None) -> list[str]:
    """Prune sealed sessions that ended more than `older_than` seconds ago; return their ids."""
    cutoff = (time.time() if now is None else now) - older_than
    pruned = []
    for info in store.sessions(live=False, limit=1_000_000):
        if info.ended_at is None or info.ended_at >= cutoff or store.seal(info.id, "tombstones") is not None:
            continue
        sealed = store.seal(info.id)
        if sealed is None:
            continue
        body, _ = sealed
        tombstone = {
            "session": info.id,
            "events": body["events"],
            "last_hash": body["last_hash"],
            "pruned_at": time.time(),
            "reason": f"retention ({older_than:.0f}s)",
        }
        signature = sealer.sign(tombstone)
        store.prune_events(info.id, tombstone, signature).result()
        digest = hashlib.sha256(chain.canonical_json({"body": tombstone, "signature": signature})).hexdigest()
        store.log("session.pruned", session=info.id, events=body["events"], tombstone=digest).result()
        pruned.append(info.id)
    if pruned:
        log("retention.pruned", sessions=len(pruned))
    return pruned
