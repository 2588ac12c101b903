"""Tamper evidence end to end: real recordings, tampered copies, a SIGKILLed bastion, bundles, retention."""

from __future__ import annotations

import json
import re
import shutil
import signal
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncssh
import pytest

from bastion.audit import chain
from tests.conftest import BastionEnv, run_bastion, running_env, spawned, wait_until

pytestmark = pytest.mark.e2e


def snapshot(source: Path, target: Path) -> Path:
    """A consistent copy of a live WAL database (what an auditor would take)."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    return target


def verify(*args: str) -> subprocess.CompletedProcess[str]:
    return run_bastion("audit", "verify", *args, check=False)


@pytest.fixture(scope="module")
def evidence(env: BastionEnv, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """A snapshot of the database after real sessions and a checkpoint; and one session's id."""
    assert env.ssh("printf 'line one\\nline two\\nline three\\n'; echo evidence-session >&2").returncode == 0
    session_id = env.latest_session("evidence-session")
    env.bastion("audit", "checkpoint")
    folder = tmp_path_factory.mktemp("evidence")
    shutil.copy(env.root / "state" / "audit.pub", folder / "audit.pub")
    return snapshot(env.root / "state" / "bastion.db", folder / "good.db"), folder / "audit.pub", session_id


def tampered(
    evidence: tuple[Path, Path, str], tmp_path: Path, change: Callable[[sqlite3.Connection, str], None]
) -> Path:
    good, _, session_id = evidence
    copy = tmp_path / "tampered.db"
    shutil.copy(good, copy)
    with sqlite3.connect(copy) as conn:
        change(conn, session_id)
    return copy


def test_untouched_copy_verifies_offline_with_the_public_key_alone(evidence: tuple[Path, Path, str]) -> None:
    good, pub, session_id = evidence
    result = verify("--database", str(good), "--pubkey", str(pub))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("verified: ") and "checkpoints" in result.stdout
    assert verify("--database", str(good), "--pubkey", str(pub), "--session", session_id).returncode == 0


def _stdout_event(conn: sqlite3.Connection, sid: str) -> int:
    return int(
        conn.execute("SELECT seq FROM events WHERE session_id=? AND type='stdout' ORDER BY seq", (sid,)).fetchone()[0]
    )


def _flip_byte(conn: sqlite3.Connection, sid: str) -> None:
    seq = _stdout_event(conn, sid)
    data = bytearray(conn.execute("SELECT data FROM events WHERE session_id=? AND seq=?", (sid, seq)).fetchone()[0])
    data[0] ^= 0x01
    conn.execute("UPDATE events SET data=? WHERE session_id=? AND seq=?", (bytes(data), sid, seq))


def _delete_event(conn: sqlite3.Connection, sid: str) -> None:
    conn.execute("DELETE FROM events WHERE session_id=? AND seq=?", (sid, _stdout_event(conn, sid)))


def _insert_event(conn: sqlite3.Connection, sid: str) -> None:
    seq = _stdout_event(conn, sid)
    conn.execute("UPDATE events SET seq = seq + 1000 WHERE session_id=? AND seq > ?", (sid, seq))
    conn.execute("UPDATE events SET seq = seq - 999 WHERE session_id=? AND seq > 1000", (sid,))
    ts, prev = conn.execute("SELECT ts, hash FROM events WHERE session_id=? AND seq=?", (sid, seq)).fetchone()
    # A well-formed forgery: its own hash is right; only what follows it can no longer fit.
    forged = chain.event_hash(sid, seq + 1, ts, "stdout", b"rm -rf /\n", prev)
    conn.execute(
        "INSERT INTO events VALUES (?, ?, ?, 'stdout', ?, ?, ?)", (sid, seq + 1, ts, b"rm -rf /\n", prev, forged)
    )


def _swap_events(conn: sqlite3.Connection, sid: str) -> None:
    seq = _stdout_event(conn, sid)
    conn.execute("UPDATE events SET seq = -1 WHERE session_id=? AND seq=?", (sid, seq))
    conn.execute("UPDATE events SET seq = ? WHERE session_id=? AND seq=?", (seq, sid, seq + 1))
    conn.execute("UPDATE events SET seq = ? WHERE session_id=? AND seq=-1", (seq + 1, sid))


def _truncate_tail(conn: sqlite3.Connection, sid: str) -> None:
    last = conn.execute("SELECT MAX(seq) FROM events WHERE session_id=?", (sid,)).fetchone()[0]
    conn.execute("DELETE FROM events WHERE session_id=? AND seq >= ?", (sid, last - 1))


def _delete_session(conn: sqlite3.Connection, sid: str) -> None:
    for table, column in (("events", "session_id"), ("seals", "session_id"), ("sessions", "id")):
        conn.execute(f"DELETE FROM {table} WHERE {column}=?", (sid,))


def _replace_seal(conn: sqlite3.Connection, sid: str) -> None:
    body = json.loads(conn.execute("SELECT body FROM seals WHERE session_id=?", (sid,)).fetchone()[0])
    body["user"] = "mallory"
    conn.execute("UPDATE seals SET body=? WHERE session_id=?", (json.dumps(body), sid))


def _edit_metadata(conn: sqlite3.Connection, sid: str) -> None:
    conn.execute("UPDATE sessions SET user='mallory' WHERE id=?", (sid,))


def _edit_audit_log(conn: sqlite3.Connection, sid: str) -> None:
    conn.execute("UPDATE audit_log SET fields=replace(fields, 'alice', 'mallory') WHERE type='auth.ok'")


def _truncate_audit_log(conn: sqlite3.Connection, sid: str) -> None:
    last = conn.execute("SELECT MAX(seq) FROM audit_log").fetchone()[0]
    conn.execute("DELETE FROM audit_log WHERE seq >= ?", (last - 3,))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_flip_byte, r"event \d+ \(stdout\) was modified"),
        (_delete_event, "events were deleted or inserted"),
        (_insert_event, "events were deleted, inserted or reordered"),
        (_swap_events, "events were deleted, inserted or reordered"),
        (_truncate_tail, "truncated"),
        (_delete_session, "recording is missing: deleted"),
        (_replace_seal, "seal does not verify"),
        (_edit_metadata, "metadata 'user' differs from the seal"),
        (_edit_audit_log, r"audit log: entry \d+ \(auth.ok\) was modified"),
        (_truncate_audit_log, "rolled back or truncated"),
    ],
)
def test_tampering_is_detected_with_a_clear_message(
    evidence: tuple[Path, Path, str], tmp_path: Path, change: Callable[[sqlite3.Connection, str], None], message: str
) -> None:
    _, pub, _session_id = evidence
    result = verify("--database", str(tampered(evidence, tmp_path, change)), "--pubkey", str(pub))
    assert result.returncode == 1
    first = result.stderr.splitlines()[0]
    assert first.startswith("FAILED: ")
    assert re.search(message, result.stderr), result.stderr


def test_resigned_with_another_key_is_detected(evidence: tuple[Path, Path, str], tmp_path: Path) -> None:
    good, _, _ = evidence
    other = asyncssh.generate_private_key("ssh-ed25519")
    (tmp_path / "other.pub").write_bytes(other.export_public_key())
    result = verify("--database", str(good), "--pubkey", str(tmp_path / "other.pub"))
    assert result.returncode == 1
    assert "signed by another key" in result.stderr or "does not verify with the audit key" in result.stderr


def test_rolled_back_log_is_detected_with_a_checkpoint_kept_elsewhere(env: BastionEnv, tmp_path: Path) -> None:
    old = snapshot(env.root / "state" / "bastion.db", tmp_path / "old.db")
    assert env.ssh("echo after-the-snapshot").returncode == 0
    env.latest_session("echo after-the-snapshot")
    kept = tmp_path / "checkpoint.txt"
    kept.write_text(env.bastion("audit", "checkpoint").stdout)
    pub = str(env.root / "state" / "audit.pub")
    assert verify("--database", str(old), "--pubkey", pub).returncode == 0  # alone, an old copy looks whole
    result = verify("--database", str(old), "--pubkey", pub, "--checkpoint", str(kept))
    assert result.returncode == 1 and "rolled back" in result.stderr


def test_bundle_verifies_elsewhere_and_detects_tampering(env: BastionEnv, tmp_path: Path) -> None:
    assert env.ssh("echo bundled-output").returncode == 0
    session_id = env.latest_session("echo bundled-output")
    path = tmp_path / "evidence.json"
    env.bastion("audit", "export", session_id, "--format", "bundle", "-o", str(path))
    result = run_bastion("audit", "verify", "--bundle", str(path), cwd=str(tmp_path))  # no configuration there
    assert result.returncode == 0 and f"session {session_id}" in result.stdout and "SHA256:" in result.stdout
    bundle = json.loads(path.read_text())
    assert "bundled-output" in json.dumps(bundle) or any(e["type"] == "stdout" for e in bundle["events"])
    bundle["events"][-2]["data"] = "dGFtcGVyZWQ="
    path.write_text(json.dumps(bundle))
    result = run_bastion("audit", "verify", "--bundle", str(path), check=False)
    assert result.returncode == 1 and "FAILED" in result.stderr


@pytest.fixture
def own_env() -> Iterator[BastionEnv]:
    with running_env() as environment:
        yield environment


def test_sigkill_during_a_session_then_restart_seals_it_as_interrupted(own_env: BastionEnv) -> None:
    env = own_env
    command = ["ssh", "-F", str(env.ssh_config), "-J", "bastion", f"{env.login}@mcp-host",
               "for i in 1 2 3; do echo committed-$i; done; sleep 30"]  # fmt: skip
    store = env.store()
    written = b"committed-1\ncommitted-2\ncommitted-3\n"

    def committed_output() -> bool:
        live = [s for s in store.sessions(live=True) if "echo committed-" in (s.command or "")]
        return len(live) == 1 and b"".join(e.data for e in store.events(live[0].id) if e.type == "stdout") == written

    with spawned(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as client:
        assert client.stdout is not None
        assert client.stdout.readline() == b"committed-1\n"
        wait_until(committed_output, "the live session's output to be committed")  # the kill loses none of it
        env.stop(signal.SIGKILL)
        client.communicate(timeout=15)
    env.start()  # the next start closes and seals what the killed process left live
    result = env.bastion("audit", "verify", "--all", check=False)
    assert result.returncode == 0, result.stderr
    sessions = json.loads(env.bastion("sessions", "list", "--json").stdout)
    interrupted = [s for s in sessions if s["status"] == "interrupted"]
    assert len(interrupted) == 1
    text = env.bastion("audit", "export", interrupted[0]["id"], "--format", "text").stdout
    assert "committed-1" in text and "committed-3" in text
    assert interrupted[0]["bytes_out"] == len(written)


def test_retention_prunes_with_a_signed_tombstone_and_stays_verifiable(own_env: BastionEnv) -> None:
    env = own_env
    assert env.ssh("echo to-be-pruned").returncode == 0
    session_id = env.latest_session("echo to-be-pruned")  # ended and sealed: only sealed sessions are pruned
    store = env.store()
    assert "pruned 0 sessions" in env.bastion("audit", "prune", "--older-than", "1h").stdout  # younger: kept
    assert list(store.events(session_id)) != []
    # An age shorter than the time since the session ended (the command alone takes longer), not a wait.
    assert "pruned 1 sessions" in env.bastion("audit", "prune", "--older-than", "1ms").stdout
    assert list(store.events(session_id)) == []
    assert store.seal(session_id, "tombstones") is not None
    assert any(e["fields"]["session"] == session_id for e in store.audit_log("session.pruned"))
    assert env.bastion("audit", "verify", check=False).returncode == 0
    with sqlite3.connect(env.root / "state" / "bastion.db") as conn:
        conn.execute(
            "UPDATE tombstones SET body=replace(body, '\"events\":', '\"events\":1') WHERE session_id=?", (session_id,)
        )
    result = env.bastion("audit", "verify", check=False)
    assert result.returncode == 1 and "tombstone" in result.stderr


def test_checkpoints_are_signed_periodically_and_at_shutdown(own_env: BastionEnv) -> None:
    env = own_env
    env.stop()
    with env.config.open("a") as file:
        file.write('\n[recording]\ncheckpoint_interval = "1s"\n')
    env.start()
    assert env.ssh("echo periodic-checkpoint; sleep 2.5").returncode == 0
    store = env.store()
    # While it ran, the session's chain head was entered in the log: the checkpoint pins its prefix.
    session_id = env.latest_session("periodic-checkpoint")
    progress = [e["fields"] for e in store.audit_log("session.progress") if e["fields"]["session"] == session_id]
    assert progress, "no session.progress entry for a session that outlived a checkpoint interval"
    hashes = {e.seq: e.hash.hex() for e in store.events(session_id)}
    assert all(hashes[p["events"]] == p["head"] for p in progress)
    wait_until(store.checkpoints, "a checkpoint signed by the periodic timer (interval 1s)")
    env.stop()  # SIGTERM: the shutdown checkpoint covers the whole log
    entries = list(store.audit_entries())
    assert store.checkpoints()[-1]["size"] == len(entries)
    assert entries[-1]["type"] == "shutdown"
    assert env.bastion("audit", "verify").returncode == 0
