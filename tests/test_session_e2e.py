"""End to end: the real OpenSSH client through the bastion to a real sshd, and what is recorded."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import BastionEnv, spawned, wait_until

pytestmark = pytest.mark.e2e


def test_exec_exit_status_and_separate_stderr(env: BastionEnv) -> None:
    result = env.ssh("echo out-$(whoami); echo err-line >&2; exit 3")
    assert result.returncode == 3
    assert result.stdout == f"out-{env.login}\n".encode()
    assert b"err-line" in result.stderr
    assert b"out-" not in result.stderr


def test_exit_signal_is_carried_to_the_client_and_recorded(env: BastionEnv) -> None:
    result = env.ssh("echo before-signal; kill -TERM $$")
    assert result.returncode == 255  # OpenSSH exits 255 when the remote command dies of a signal
    assert b"before-signal" in result.stdout
    session = env.store().session(env.latest_session("before-signal"))
    assert session is not None and session.exit_signal == "TERM" and session.exit_status is None


def test_upstream_certificate_names_the_real_user(env: BastionEnv) -> None:
    assert env.ssh("true").returncode == 0
    log = (env.target.directory / "sshd.log").read_text()
    accepted = re.findall(r'Accepted certificate ID "bastion user=alice session=([0-9a-f]+)"', log)
    assert accepted, log[-2000:]


# Bytes 0x80-0xff only: nothing in them can look like a secret, so masking (on in this env) leaves them
# alone and the bridge itself must be byte-exact. (Binary output with secret-like runs is masked like text.)
def test_large_transfers_are_byte_exact_both_ways(env: BastionEnv, tmp_path: os.PathLike[str]) -> None:
    payload = os.urandom(100 * 1024 * 1024).translate(bytes(b | 0x80 for b in range(256)))
    digest = hashlib.sha256(payload).hexdigest()
    upload = env.ssh("cat > big.bin && sha256sum big.bin", input=payload)
    assert upload.returncode == 0, upload.stderr
    assert upload.stdout.split()[0].decode() == digest
    download = env.ssh("cat big.bin && rm big.bin")
    assert download.returncode == 0
    assert len(download.stdout) == len(payload)
    assert hashlib.sha256(download.stdout).hexdigest() == digest
    session = env.store().session(env.latest_session("cat big.bin && rm"))
    assert session is not None and session.bytes_out == len(payload) and session.exit_status == 0


def test_env_allow_list(env: BastionEnv) -> None:
    command = [
        "ssh",
        "-F",
        str(env.ssh_config),
        "-o",
        "SendEnv=LANG SECRET_TOKEN",
        "-J",
        "bastion",
        f"{env.login}@mcp-host",
        'echo "lang=$LANG token=$SECRET_TOKEN"',
    ]
    result = subprocess.run(
        command, capture_output=True, timeout=60, env={**os.environ, "LANG": "C.UTF-8", "SECRET_TOKEN": "leak"}
    )
    assert result.stdout == b"lang=C.UTF-8 token=\n"


def test_scp_both_ways(env: BastionEnv, tmp_path: os.PathLike[str]) -> None:
    source = os.path.join(tmp_path, "report.bin")
    data = os.urandom(3 * 1024 * 1024 + 17)
    with open(source, "wb") as file:
        file.write(data)
    base = ["scp", "-q", "-F", str(env.ssh_config), "-J", "bastion"]
    before = _subsystem_sessions(env)
    up = subprocess.run([*base, source, f"{env.login}@mcp-host:scp-up.bin"], capture_output=True, timeout=60)
    assert up.returncode == 0, up.stderr
    back = os.path.join(tmp_path, "back.bin")
    down = subprocess.run([*base, f"{env.login}@mcp-host:scp-up.bin", back], capture_output=True, timeout=60)
    assert down.returncode == 0, down.stderr
    with open(back, "rb") as file:
        assert file.read() == data
    transfers = _transfers(env, before, sessions=2)
    assert {"op": "write", "bytes": len(data)} in [
        {"op": t["op"], "bytes": t["bytes"]} for t in transfers if t["path"].endswith("scp-up.bin")
    ]
    assert any(t["op"] == "read" and t["bytes"] == len(data) and t["path"].endswith("scp-up.bin") for t in transfers)


def test_sftp_batch(env: BastionEnv, tmp_path: os.PathLike[str]) -> None:
    source = os.path.join(tmp_path, "notes.txt")
    with open(source, "w") as file:
        file.write("notes\n" * 1000)
    batch = os.path.join(tmp_path, "batch")
    with open(batch, "w") as file:
        file.write(f"put {source} sftp-notes.txt\nrename sftp-notes.txt sftp-renamed.txt\nls\nrm sftp-renamed.txt\n")
    before = _subsystem_sessions(env)
    result = subprocess.run(
        ["sftp", "-F", str(env.ssh_config), "-J", "bastion", "-b", batch, f"{env.login}@mcp-host"],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert b"sftp-renamed.txt" in result.stdout
    transfers = _transfers(env, before, sessions=1)
    assert any(t["op"] == "write" and t["bytes"] == 6000 and t["path"].endswith("sftp-notes.txt") for t in transfers)
    assert any(t["op"] == "rename" and t["path"].endswith("sftp-notes.txt") for t in transfers)
    assert any(t["op"] == "remove" and t["path"].endswith("sftp-renamed.txt") for t in transfers)


def _subsystem_sessions(env: BastionEnv) -> set[str]:
    return {s.id for s in env.store().sessions() if s.kind == "subsystem"}


def _transfers(env: BastionEnv, before: set[str], sessions: int) -> list[dict[str, Any]]:
    """The transfer events of the subsystem sessions started since `before`, once all of them are sealed."""

    def started() -> set[str] | None:
        found = _subsystem_sessions(env) - before
        return found if len(found) >= sessions else None

    new = wait_until(started, f"{sessions} new sftp session(s)")
    transfers = []
    for session_id in new:
        env.sealed(session_id)  # everything a session records is committed before its seal
        transfers += [e.fields() for e in env.store().events(session_id) if e.type == "transfer"]
    return transfers


def test_recording_and_exports(env: BastionEnv, tmp_path: os.PathLike[str]) -> None:
    result = env.ssh("printf 'alpha\\nbeta\\n'; printf 'gamma\\n' >&2; exit 4")
    assert result.returncode == 4
    session_id = env.latest_session("printf 'alpha")
    store = env.store()
    session = store.session(session_id)
    assert session is not None
    assert (session.user, session.login, session.target, session.kind) == ("alice", env.login, "mcp-host", "exec")
    assert session.cert_key_id.startswith("user=alice serial=") and session.cert_serial > 0
    assert session.source.startswith("127.0.0.1:") and session.end_reason == "exit" and session.exit_status == 4
    assert session.ended_at is not None and session.ended_at >= session.started_at
    events = list(store.events(session_id))
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    types = [e.type for e in events]
    assert types[0] == "exec" and types[-1] == "exit"
    assert b"".join(e.data for e in events if e.type == "stdout") == b"alpha\nbeta\n"
    assert b"".join(e.data for e in events if e.type == "stderr") == b"gamma\n"

    cast = env.bastion("audit", "export", session_id, "--format", "asciicast").stdout.splitlines()
    header = json.loads(cast[0])
    assert header["version"] == 2 and header["width"] > 0
    frames = [json.loads(line) for line in cast[1:]]
    assert "".join(f[2] for f in frames if f[1] == "o") == "alpha\nbeta\ngamma\n"
    text = env.bastion("audit", "export", session_id, "--format", "text").stdout
    assert "alpha\nbeta\n" in text and "gamma" in text
    lines = [
        json.loads(line) for line in env.bastion("audit", "export", session_id, "--format", "jsonl").stdout.splitlines()
    ]
    assert lines[0]["session"]["id"] == session_id
    assert [line["seq"] for line in lines[1:]] == [e.seq for e in events]


def test_asciicast_plays_in_asciinema(env: BastionEnv, tmp_path: os.PathLike[str]) -> None:
    assert env.ssh("echo played-back").returncode == 0
    path = os.path.join(tmp_path, "session.cast")
    env.bastion("audit", "export", env.latest_session("echo played-back"), "-o", path)
    asciinema = os.path.join(os.path.dirname(sys.executable), "asciinema")
    result = subprocess.run([asciinema, "cat", path], capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert b"played-back" in result.stdout


def test_client_cut_off_is_closed_with_its_reason(env: BastionEnv) -> None:
    command = ["ssh", "-F", str(env.ssh_config), "-J", "bastion", f"{env.login}@mcp-host", "echo cut-me-off; sleep 60"]
    with spawned(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as client:
        assert client.stdout is not None
        assert client.stdout.readline() == b"cut-me-off\n"
        client.kill()
        client.communicate(timeout=10)
    session = env.store().session(env.latest_session("cut-me-off"))
    assert session is not None and session.status == "closed" and session.end_reason.startswith("client")
    assert session.exit_status is None


def test_sessions_list_shows_the_session(env: BastionEnv) -> None:
    assert env.ssh("echo listed-session").returncode == 0
    env.latest_session("echo listed-session")
    table = env.bastion("sessions", "list").stdout
    assert "alice" in table and "echo listed-session" in table


def test_target_cut_off_is_closed_with_its_reason(env: BastionEnv) -> None:
    # Killing the target's sshd session process drops the upstream connection with no exit status.
    result = env.ssh("echo target-cut-off; sleep 1; kill -9 $PPID; sleep 5")
    assert b"target-cut-off" in result.stdout
    assert result.returncode == 255
    session = env.store().session(env.latest_session("target-cut-off"))
    assert session is not None and session.status == "closed" and session.exit_status is None
    assert session.end_reason.startswith("target")


def test_structured_log_lines(env: BastionEnv) -> None:
    assert env.ssh("echo logged-session").returncode == 0
    session_id = env.latest_session("echo logged-session")

    def records() -> list[dict[str, Any]]:
        lines = (env.root / "serve.log").read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    # The bastion writes these lines as things happen; the last may come just after the client has exited.
    wanted = {"connection", "auth.ok", "channel", "login", "connection.closed"}

    def all_written() -> list[dict[str, Any]] | None:
        found = records()
        return found if wanted <= {r["event"] for r in found} else None

    written = wait_until(all_written, f"the log lines {sorted(wanted)}")
    events = {r["event"] for r in written if r.get("session") == session_id}
    assert {"session.start", "session.end"} <= events


def test_signal_and_break_requests_reach_the_target(env: BastionEnv) -> None:
    # OpenSSH's client cannot send a "signal" request, so an asyncssh client (tunnelled through the
    # bastion with the same certificate, as ssh -J does) sends one; the target's exit signal returns.
    import asyncio

    import asyncssh

    async def run() -> asyncssh.SSHCompletedProcess:
        key = asyncssh.read_private_key(str(env.user_key))
        cert = asyncssh.read_certificate(f"{env.user_key}-cert.pub")
        known = asyncssh.import_known_hosts((env.root / "client_known_hosts").read_text())
        options = {"client_keys": [(key, cert)], "known_hosts": known, "config": None, "agent_path": None}
        async with (
            asyncssh.connect("127.0.0.1", env.port, username="alice", **options) as jump,
            asyncssh.connect("mcp-host", 22, tunnel=jump, username=env.login, **options) as conn,
        ):
            process = await conn.create_process("echo ready; exec sleep 30", term_type="xterm")
            assert (await process.stdout.readline()).strip() == "ready"
            process.channel.send_break(200)
            process.send_signal("TERM")
            return await asyncio.wait_for(process.wait(), 20)

    completed = asyncio.run(run())
    assert completed.exit_signal is not None and completed.exit_signal[0] == "TERM"
    session = env.store().session(env.latest_session("echo ready; exec sleep 30"))
    assert session is not None and session.exit_signal == "TERM"
    types = [e.type for e in env.store().events(session.id)]
    assert "signal" in types and "break" in types
