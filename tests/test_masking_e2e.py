"""Masking end to end: `ssh -J bastion mcp-host cat secrets.txt` shows masked output, in exec and in a pty,
and no unmasked secret byte is anywhere in the database files (the SQLite file, its WAL and shm)."""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import BastionEnv

pytestmark = pytest.mark.e2e

ESC = "\x1b"
# Each secret with the bytes that must never show: (line written to the file, secret part).
SECRETS = [
    ("aws_access_key_id = AKIAIOSFODNN7EXAMPLE", "IOSFODNN7EXAMPLE"),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI/K7MDENG"),
    ("token: ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8", "a1B2c3D4e5F6g7H8i9J0"),
    ("DB_PASSWORD=hunter2-correct-horse", "hunter2-correct-horse"),
    ("DATABASE_URL=postgres://app:s3cr3tP4ssw0rd@db.internal:5432/app", "s3cr3tP4ssw0rd"),
    ("contact: jane.doe@example.org", "jane.doe@example.org"),
    ("card 4111 1111 1111 1111 on file", "4111 1111 1111 1111"),
    ("ssn 123-45-6789", "123-45-6789"),
    ("iban GB82WEST12345698765432", "GB82WEST12345698765432"),
    (f"colour split: AKIA{ESC}[31mQWERTYUIOPASDFGH{ESC}[0m", "QWERTYUIOPASDFGH"),
]
NOT_SECRET = "order 4111111111111112 shipped"  # 16 digits that fail Luhn: left alone


@pytest.fixture(scope="module")
def secrets_file(env: BastionEnv, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[str]]:
    """A file on the target with secrets, an OpenSSH private key among them; returns (name, secret parts)."""
    key = tmp_path_factory.mktemp("key") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(key)], check=True)
    pem = key.read_text()
    key_body = pem.splitlines()[1]
    lines = [line for line, _ in SECRETS] + [NOT_SECRET, pem.rstrip("\n"), "end of file"]
    name = f"secrets-{uuid.uuid4().hex[:8]}.txt"
    upload = env.ssh(f"cat > {name}", input=("\n".join(lines) + "\n").encode())  # input is never recorded
    assert upload.returncode == 0, upload.stderr
    return name, [secret for _, secret in SECRETS] + [key_body]


def assert_masked(output: bytes, secrets: list[str]) -> None:
    text = output.decode(errors="replace")
    for secret in secrets:
        assert secret not in text, f"{secret!r} was shown"
    for kind in ("aws-key", "aws-secret", "github-token", "password", "url-password", "email", "card"):
        assert f"[masked:{kind}]" in text, f"no [masked:{kind}] in {text!r}"
    assert "[masked:private-key]" in text and "end of file" in text
    assert NOT_SECRET in text


def test_exec_output_is_masked(env: BastionEnv, secrets_file: tuple[str, list[str]]) -> None:
    name, secrets = secrets_file
    result = env.ssh(f"cat {name}")
    assert result.returncode == 0
    assert_masked(result.stdout, secrets)
    assert f"colour split: [masked:aws-key]{ESC}[31m{ESC}[0m".encode() in result.stdout


def test_stderr_is_masked_too(env: BastionEnv, secrets_file: tuple[str, list[str]]) -> None:
    name, secrets = secrets_file
    result = env.ssh(f"cat {name} >&2")
    assert result.returncode == 0, result.stderr
    assert_masked(result.stderr, secrets)


def test_pty_output_is_masked_and_the_session_counts_its_maskings(
    env: BastionEnv, secrets_file: tuple[str, list[str]]
) -> None:
    name, secrets = secrets_file
    command = ["ssh", "-tt", "-F", str(env.ssh_config), "-J", "bastion", f"{env.login}@mcp-host", f"cat {name}"]
    result = subprocess.run(command, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert b"\r\n" in result.stdout  # a pty: the terminal's line endings
    assert_masked(result.stdout, secrets)
    session = env.store().session(env.latest_session(f"cat {name}"))
    assert session is not None
    maskings = session.extra["maskings"]
    assert maskings["aws-key"] >= 2 and maskings["private-key"] == 1 and maskings["email"] == 1
    ended = env.logged("session.end", lambda f: f["session"] == session.id and "maskings" in f)
    assert ended[-1]["maskings"] == maskings


def test_a_full_screen_editor_drawing_secrets_shows_them_masked(
    env: BastionEnv, secrets_file: tuple[str, list[str]]
) -> None:
    """vim draws its screen with cursor positioning, not line breaks: the secrets are still words."""
    name, secrets = secrets_file
    other = f"long-lines-{uuid.uuid4().hex[:6]}.txt"  # drawn first, so that the secrets are drawn over it
    written = env.ssh(f"cat > {other}", input=b"a long first line of some other file, longer than the secrets\n" * 30)
    assert written.returncode == 0, written.stderr
    shown = f"{other}.secrets"  # vim shows ESC as ^[, so the colour split line would be no secret there
    assert env.ssh(f"grep -v '^colour split' {name} > {shown}").returncode == 0
    vim = f"vim -u NONE -N -n -c redraw -c 'edit {shown}' -c redraw -c 'sleep 300m' -c 'qa!' {other}"
    command = ["ssh", "-tt", "-F", str(env.ssh_config), "-J", "bastion", f"{env.login}@mcp-host", vim]
    terminal = {**os.environ, "TERM": "xterm-256color", "LINES": "40", "COLUMNS": "120"}
    result = subprocess.run(command, capture_output=True, timeout=60, stdin=subprocess.DEVNULL, env=terminal)
    assert result.returncode == 0, result.stderr
    screen = result.stdout
    assert re.search(rb"\x1b\[\d+;1H", screen), "vim did not draw with cursor positioning"
    for kind in ("aws-key", "aws-secret", "github-token", "password", "ssn", "iban", "card", "private-key"):
        assert f"[masked:{kind}]".encode() in screen
    for secret in secrets:
        assert secret.encode() not in screen, f"{secret!r} was shown"


def test_no_unmasked_secret_byte_is_stored(env: BastionEnv, secrets_file: tuple[str, list[str]]) -> None:
    name, secrets = secrets_file
    assert env.ssh(f"cat {name}; cat {name} >&2").returncode == 0
    env.latest_session(f"cat {name}; cat")  # sealed: every event of the session is committed before its seal
    state = env.root / "state"
    files = [p for p in state.iterdir() if p.name.startswith("bastion.db")]
    assert {p.name for p in files} >= {"bastion.db", "bastion.db-wal"}
    stored = b"".join(p.read_bytes() for p in files)
    assert b"[masked:aws-key]" in stored  # the recordings are there, masked
    for secret in secrets:
        assert secret.encode() not in stored, f"{secret!r} is in the database files"


def test_a_secret_in_the_command_line_is_masked_where_it_is_stored(env: BastionEnv) -> None:
    marker = uuid.uuid4().hex[:8]
    result = env.ssh(f"echo {marker} ghp_Z9y8X7w6V5u4T3s2R1q0P9o8N7m6L5k4J3i2")
    assert result.stdout == f"{marker} [masked:github-token]\n".encode()
    session = env.store().session(env.latest_session(marker))
    assert session is not None and session.command == f"echo {marker} [masked:github-token]"
    exec_events = [e.fields() for e in env.store().events(session.id) if e.type == "exec"]
    assert exec_events == [{"command": f"echo {marker} [masked:github-token]"}]


def test_an_environment_value_is_stored_masked_by_its_name(env: BastionEnv) -> None:
    """`LC_*` is accepted by default: a value is stored masked whole when its name says it is secret, or when
    anything in it would be masked (the masker alone would mask only the first word of a password)."""
    marker = uuid.uuid4().hex[:8]
    options = ["-o", 'SetEnv=LC_DB_PASSWORD="c0rrect horse battery" LC_NOTE="mail jane@example.org" LC_X=plain-words']
    result = subprocess.run(
        ["ssh", "-F", str(env.ssh_config), *options, "-J", "bastion", f"{env.login}@mcp-host", f"echo {marker}"],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    session = env.store().session(env.latest_session(marker))
    assert session is not None
    stored = {e.fields()["name"]: e.fields()["value"] for e in env.store().events(session.id) if e.type == "env"}
    assert stored == {"LC_DB_PASSWORD": "[masked:env]", "LC_NOTE": "[masked:env]", "LC_X": "plain-words"}


def test_file_transfers_are_not_masked_by_default(env: BastionEnv, secrets_file: tuple[str, list[str]]) -> None:
    name, secrets = secrets_file
    target = Path(env.root / f"copy-{uuid.uuid4().hex[:6]}.txt")
    result = subprocess.run(
        ["scp", "-F", str(env.ssh_config), "-J", "bastion", f"{env.login}@mcp-host:{name}", str(target)],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert secrets[0] in target.read_text()  # a byte-exact copy (documented: [masking] transfers = true masks)
