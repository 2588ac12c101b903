"""Masking whatever the timing, end to end: a private key printed in two pieces with a pause between them
(`head -c 15 key.pem | tr -d '\\n'; sleep 0.2; tail -c +16 key.pem`) is never stored, and the client sees
it masked too; typed echo goes to the client at once while the recording waits for what is decided."""

from __future__ import annotations

import subprocess
import uuid

import pytest

from tests.conftest import BastionEnv, running_env

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def key_file(env: BastionEnv, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[str]]:
    """An OpenSSH private key on the target; returns (its name there, the lines of its body)."""
    key = tmp_path_factory.mktemp("key") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(key)], check=True)
    pem = key.read_bytes()
    name = f"key-{uuid.uuid4().hex[:8]}.pem"
    assert env.ssh(f"cat > {name}", input=pem).returncode == 0
    return name, pem.decode().splitlines()[1:-1]


def recorded_output(env: BastionEnv, command: str) -> bytes:
    store = env.store()
    session = env.latest_session(command)
    return b"".join(event.data for event in store.events(session) if event.type in ("stdout", "stderr"))


@pytest.mark.parametrize("pause", ["0.2", "1.5"])
def test_a_private_key_printed_in_two_pieces_is_never_stored(
    env: BastionEnv, key_file: tuple[str, list[str]], pause: str
) -> None:
    """Before, the first 15 bytes were released after the idle timeout and the rest no longer matched: the
    whole body was shown and stored. The recording now waits for the rest, however long the pause."""
    name, body = key_file
    command = f"head -c 15 {name} | tr -d '\\n'; sleep {pause}; tail -c +16 {name}; echo done-{pause}"
    result = env.ssh(command)
    assert result.returncode == 0, result.stderr
    stored = recorded_output(env, f"sleep {pause}")
    assert stored == f"[masked:private-key]\ndone-{pause}\n".encode()
    if pause == "0.2":  # within strong_hold (1 s): the client waited for the rest too
        assert result.stdout == stored
    else:  # beyond it the client was shown the BEGIN line's start, then the replacement for the rest
        assert result.stdout == f"-----BEGIN OPEN[masked:private-key]\ndone-{pause}\n".encode()
    for line in body:
        assert line.encode() not in result.stdout, "a line of the key's body reached the client"


def test_a_private_key_printed_in_a_pty_in_two_pieces_is_masked(
    env: BastionEnv, key_file: tuple[str, list[str]]
) -> None:
    name, body = key_file
    command = f"head -c 15 {name} | tr -d '\\n'; sleep 0.3; tail -c +16 {name}; echo pty-done"
    ssh = ["ssh", "-tt", "-F", str(env.ssh_config), "-J", "bastion", f"{env.login}@mcp-host", command]
    result = subprocess.run(ssh, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert b"[masked:private-key]" in result.stdout and b"pty-done" in result.stdout
    stored = recorded_output(env, "echo pty-done")
    assert b"[masked:private-key]" in stored
    for line in body:
        assert line.encode() not in result.stdout and line.encode() not in stored


def test_masking_turned_off_passes_output_and_commands_as_they_are() -> None:
    """`[masking] packs = []`: no masker runs, and nothing breaks for want of one (a session once failed
    when the gate asked an empty masker about the command)."""
    with running_env("[masking]\npacks = []\n") as off:
        result = off.ssh("echo AKIAIOSFODNN7EXAMPLE")
        assert result.returncode == 0, result.stderr
        assert result.stdout == b"AKIAIOSFODNN7EXAMPLE\n"
