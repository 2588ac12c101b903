"""Offline verification: recompute every chain, check seals, tombstones and checkpoints.

Needs only a copy of the database and the audit public key. Each problem is one line naming the
first bad item; a result with no problems means everything that was committed verifies.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bastion.audit import chain
from bastion.audit.events import ChainedEvent, SessionInfo
from bastion.audit.seal import SEALED_FIELDS, seal_digest
from bastion.storage import Store


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sessions: int = 0
    events: int = 0
    log_entries: int = 0
    checkpoints: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_events(session_id: str, events: Iterable[ChainedEvent]) -> tuple[int, bytes, str | None]:
    """Walk a session's chain; return (count, last hash, first problem or None)."""
    prev, count = chain.GENESIS, 0
    for count, event in enumerate(events, 1):
        if event.seq != count:
            return (
                count - 1,
                prev,
                (
                    f"session {session_id}: expected event {count}, found event {event.seq}: "
                    "events were deleted or inserted"
                ),
            )
        if event.prev_hash != prev:
            return (
                count - 1,
                prev,
                (
                    f"session {session_id}: event {count} does not follow event {count - 1}: "
                    "events were deleted, inserted or reordered"
                ),
            )
        digest = chain.event_hash(session_id, event.seq, event.ts, event.type, event.data, prev)
        if digest != event.hash:
            return count - 1, prev, f"session {session_id}: event {count} ({event.type}) was modified"
        prev = digest
    return count, prev, None


def verify_session(store: Store, info: SessionInfo, public: Ed25519PublicKey) -> tuple[str | None, int]:
    """The first problem with one session's recording and seal (None if it verifies), and its event count."""
    sid = info.id
    sealed = store.seal(sid)
    count, head, problem = verify_events(sid, store.events(sid))
    if problem:
        return problem, count
    if sealed is None:
        if info.status == "live":
            return None, count  # still running: its chain verifies so far; sealed when it ends
        return f"session {sid}: has no seal", count
    body, signature = sealed
    if not chain.seal_valid(body, signature, public):
        return f"session {sid}: seal does not verify with the audit key (replaced, or signed by another key)", count
    tombstone = store.seal(sid, "tombstones")
    if tombstone is not None:
        tomb, tomb_sig = tombstone
        if not chain.seal_valid(tomb, tomb_sig, public):
            return f"session {sid}: retention tombstone does not verify with the audit key", count
        if (tomb["events"], tomb["last_hash"]) != (body["events"], body["last_hash"]) or count:
            return f"session {sid}: retention tombstone does not match the seal", count
        return None, body["events"]
    if count < body["events"]:
        return f"session {sid}: recording ends at event {count} but the seal says {body['events']}: truncated", count
    if count > body["events"]:
        return f"session {sid}: {count - body['events']} events after the seal: appended", count
    if head.hex() != body["last_hash"]:
        return f"session {sid}: last event does not match the seal", count
    row = asdict(info)
    row["groups"] = list(info.groups)
    for name in SEALED_FIELDS:
        if row[name] != body[name]:
            return f"session {sid}: metadata {name!r} differs from the seal ({row[name]!r} != {body[name]!r})", count
    return None, count


def verify_log(store: Store, key: chain.NoteKey, external: list[str] | None = None) -> tuple[list[str], int, int]:
    """Check the audit log's tree against its checkpoints (and checkpoints kept elsewhere)."""
    problems: list[str] = []
    wanted: dict[int, list[tuple[str, chain.Checkpoint]]] = {}
    notes = [(f"checkpoint at size {cp['size']}", cp["note"]) for cp in store.checkpoints()]
    notes += [(f"checkpoint given with --checkpoint ({i + 1})", note) for i, note in enumerate(external or [])]
    for label, note in notes:
        try:
            point = chain.Checkpoint.parse(chain.open_note(note, key))
        except chain.NoteError as exc:
            problems.append(f"audit log: {label}: {exc}")
            continue
        if point.origin != key.name:
            problems.append(f"audit log: {label}: origin {point.origin!r} is not {key.name!r}")
            continue
        wanted.setdefault(point.size, []).append((label, point))
    frontier = chain.MerkleFrontier()
    entries = 0
    for entries, entry in enumerate(store.audit_entries(), 1):
        index = entries - 1
        if entry["seq"] != index:
            problems.append(
                f"audit log: expected entry {index}, found {entry['seq']}: entries were deleted or inserted"
            )
            break
        leaf = chain.leaf_hash(chain.audit_entry(entry["seq"], entry["ts"], entry["type"], entry["fields"]))
        if leaf != entry["leaf_hash"]:
            problems.append(f"audit log: entry {index} ({entry['type']}) was modified")
            break
        frontier.append(leaf)
        for label, point in wanted.pop(frontier.size, []):
            if point.root != frontier.root():
                problems.append(f"audit log: does not match the {label}: entries were modified, deleted or reordered")
    for size, points in sorted(wanted.items()):
        if not problems or size > entries:
            for label, _ in points:
                problems.append(
                    f"audit log: has {entries} entries but the {label} covers {size}: "
                    "the log was rolled back or truncated"
                )
    return problems, entries, len(notes)


def _log_sessions(store: Store) -> tuple[set[str], dict[str, str]]:
    started, sealed = set(), {}
    for entry in store.audit_entries():
        if entry["type"] == "session.start":
            started.add(_entry_field(entry, "session"))
        elif entry["type"] == "session.end":
            sealed[_entry_field(entry, "session")] = _entry_field(entry, "seal")
    return started, sealed


def _entry_field(entry: dict[str, Any], name: str) -> str:
    return str(json.loads(entry["fields"]).get(name, ""))


def verify_store(
    store: Store,
    public: Ed25519PublicKey,
    origin: str,
    session_id: str | None = None,
    external: list[str] | None = None,
) -> Report:
    report = Report()
    key = chain.NoteKey(origin, public)
    started, sealed_in_log = _log_sessions(store)
    if session_id is not None:
        info = store.session(session_id)
        if info is None:
            report.problems.append(f"session {session_id}: not in the database")
            return report
        infos = [info]
    else:
        infos = [s for sid in store.session_ids() if (s := store.session(sid)) is not None]
        present = {s.id for s in infos}
        for missing in sorted(started - present):
            report.problems.append(f"session {missing}: in the audit log but its recording is missing: deleted")
        log_problems, report.log_entries, report.checkpoints = verify_log(store, key, external)
        report.problems += log_problems
    for info in infos:
        problem, count = verify_session(store, info, public)
        report.sessions += 1
        report.events += count
        if problem:
            report.problems.append(problem)
            continue
        if info.id not in started:
            report.problems.append(f"session {info.id}: not in the audit log: inserted")
        sealed = store.seal(info.id)
        if sealed is not None and seal_digest(*sealed) != sealed_in_log.get(info.id):
            report.problems.append(f"session {info.id}: seal differs from the one the audit log recorded: replaced")
        if info.status == "live":
            report.notes.append(f"session {info.id}: still live; its chain verifies so far")
    return report
