"""The store: batched commits off the event loop, reads, interrupted sessions, file modes."""

from __future__ import annotations

import sqlite3
import stat
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bastion.audit import chain, retention
from bastion.audit import events as ev
from bastion.audit.events import ChainedEvent, SessionInfo
from bastion.audit.recording import SessionRecording, close_interrupted
from bastion.audit.seal import Sealer
from bastion.control.approvals import Vote
from bastion.storage import SqliteStore as Store
from bastion.storage.approvals import ApprovalTables


@pytest.fixture
def sealer() -> Sealer:
    return Sealer(Ed25519PrivateKey.generate())


def _event(session_id: str, seq: int, data: bytes) -> ChainedEvent:
    return ChainedEvent(session_id, seq, float(seq), ev.STDOUT, data, chain.GENESIS, chain.GENESIS)


def _info(session_id: str) -> SessionInfo:
    return SessionInfo(
        id=session_id,
        connection_id="c1",
        user="alice",
        groups=("dev",),
        cert_serial=5,
        cert_key_id="user=alice serial=5",
        source="127.0.0.1:5",
        target="mcp-host",
        target_address="10.0.0.5:22",
        login="mcp",
        started_at=time.time(),
    )


def test_recording_round_trip_and_metadata(tmp_path: Path, sealer: Sealer) -> None:
    store = Store(tmp_path / "db.sqlite", flush_interval=0.01)
    recording = SessionRecording(store, sealer, _info("s1"))
    recording.describe(kind="exec", command="ls")
    recording.note(ev.EXEC, command="ls")
    recording.output(b"a\x00b\xff")
    recording.output(b"oops", stderr=True)
    recording.input(7)
    recording.close("exit", exit_status=2)
    store.flush()
    session = store.session("s1")
    assert session is not None
    assert (session.kind, session.command, session.exit_status, session.status) == ("exec", "ls", 2, "closed")
    assert (session.bytes_out, session.bytes_in, session.groups) == (8, 7, ("dev",))
    events = list(store.events("s1"))
    assert [e.type for e in events] == ["exec", "stdout", "stderr", "input", "exit"]
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert events[1].data == b"a\x00b\xff" and events[4].fields() == {"status": 2}
    assert store.session("s") is not None  # unique prefix
    store.close()


def test_writes_do_not_wait_for_the_disk(tmp_path: Path) -> None:
    """Appending is a queue put, not a commit: with the writer held up, 20,000 writes still return, and
    nothing is visible until the writer commits them."""
    store = Store(tmp_path / "db.sqlite", flush_interval=0.05)
    writer_free = threading.Event()
    blocking = store.approvals_write(lambda tables: writer_free.wait(30))
    for seq in range(1, 20001):
        store.insert_events([_event("s", seq, b"x" * 100)])
    assert list(store.events("s")) == [] and not blocking.done()
    writer_free.set()
    store.flush()
    assert sum(1 for _ in store.events("s")) == 20000
    store.close()


def test_committed_events_survive_a_new_process_and_live_sessions_become_interrupted(
    tmp_path: Path, sealer: Sealer
) -> None:
    path = tmp_path / "db.sqlite"
    store = Store(path)
    recording = SessionRecording(store, sealer, _info("s2"))
    recording.output(b"before the crash")
    store.flush()
    # No close: as if the process died. A new store (the next start) closes and seals it as interrupted.
    reopened = Store(path)
    assert close_interrupted(reopened, sealer) == ["s2"]
    body, _ = reopened.seal("s2") or ({}, "")
    (event,) = reopened.events("s2")
    assert body["status"] == "interrupted" and body["events"] == 1 and body["last_hash"] == event.hash.hex()
    session = reopened.session("s2")
    assert session is not None and session.status == "interrupted"
    assert [e.data for e in reopened.events("s2")] == [b"before the crash"]
    assert reopened.sessions(live=True) == []
    store.close()
    reopened.close()


def test_database_file_is_private(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite")
    store.log("test", value=1).result()
    assert stat.S_IMODE((tmp_path / "db.sqlite").stat().st_mode) == 0o600
    assert store.audit_log("test")[0]["fields"] == {"value": 1}
    store.close()


def test_a_failing_write_does_not_lose_the_rest_of_its_batch(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite")
    store.insert_events([_event("s", 1, b"one")])
    vote = Vote("bob", True, "", 1.0)
    first = store.approvals_write(lambda tables: tables.add_vote(1, vote))
    duplicate = store.approvals_write(lambda tables: tables.add_vote(1, vote))  # the same primary key again
    store.insert_events([_event("s", 2, b"two")])
    store.flush()
    assert first.exception() is None and isinstance(duplicate.exception(), sqlite3.IntegrityError)
    assert [e.data for e in store.events("s")] == [b"one", b"two"]
    store.close()


def test_a_failing_write_leaves_none_of_its_statements(tmp_path: Path) -> None:
    """A write of several statements that fails at its second keeps nothing of its first."""
    store = Store(tmp_path / "db.sqlite")
    vote = Vote("bob", True, "", 1.0)

    def twice(tables: ApprovalTables) -> None:
        tables.add_vote(7, vote)
        tables.add_vote(7, vote)  # the same primary key: fails

    failed = store.approvals_write(twice)
    store.flush()
    assert isinstance(failed.exception(), sqlite3.IntegrityError)
    votes = sqlite3.connect(store.path).execute("SELECT COUNT(*) FROM approval_votes").fetchone()[0]
    assert votes == 0
    store.close()


def test_output_is_coalesced_within_the_window_and_keeps_every_byte(tmp_path: Path, sealer: Sealer) -> None:
    import asyncio

    store = Store(tmp_path / "db.sqlite", flush_interval=0.01)

    async def session() -> SessionRecording:
        recording = SessionRecording(store, sealer, _info("s3"))
        for i in range(100):
            recording.output(b"%03d\n" % i)  # one burst: one event
        recording.input(3)
        recording.input(4)
        recording.flush()  # what the coalescing window's timer does when it ends
        recording.output(b"later\n")  # after the window: an event of its own
        recording.output(b"err\n", stderr=True)
        recording.close("exit", exit_status=0)
        return recording

    asyncio.run(session())
    store.flush()
    events = list(store.events("s3"))
    assert [e.type for e in events] == ["stdout", "input", "stdout", "stderr", "exit"]
    assert events[0].data == b"".join(b"%03d\n" % i for i in range(100))
    assert events[1].fields() == {"bytes": 7}
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    body, _ = store.seal("s3") or ({}, "")
    assert body["events"] == 5 and body["last_hash"] == events[-1].hash.hex()
    store.close()


def test_retention_prunes_only_sessions_older_than_the_limit(tmp_path: Path, sealer: Sealer) -> None:
    """The age threshold, on an injected clock: a second short of the limit keeps the events; past it, a
    signed tombstone replaces them."""
    store = Store(tmp_path / "db.sqlite", flush_interval=0.01)
    recording = SessionRecording(store, sealer, _info("s4"))
    recording.output(b"old output")
    recording.close("exit", exit_status=0)
    store.flush()
    ended = store.session("s4").ended_at  # type: ignore[union-attr]
    assert ended is not None
    assert retention.prune(store, sealer, older_than=3600, now=ended + 3599) == []
    store.flush()
    assert [e.data for e in store.events("s4")] == [b"old output", ev.encode_fields(status=0)]
    assert retention.prune(store, sealer, older_than=3600, now=ended + 3601) == ["s4"]
    store.flush()
    assert list(store.events("s4")) == [] and store.seal("s4", "tombstones") is not None
    store.close()
