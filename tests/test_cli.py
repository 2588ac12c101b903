"""The command line with bad input: one line saying what is wrong, a non-zero exit, nothing written;
and what it shows of stored text: one line per entry, no control character reaching the terminal."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion import config as config_mod
from bastion.audit.bundle import FORMAT
from bastion.audit.events import SessionInfo
from bastion.display import sanitize_for_display
from bastion.storage import SqliteStore
from tests.conftest import BIN, run_bastion, wait_until

# What an attacker types: set the terminal's title, write its clipboard, start a new row, reverse text.
HOSTILE = "echo hi\x1b]0;pwned\x07\x1b]52;c;cHduZWQ=\x07\nsecond\r\tline \u202eenil\u202c \x9b2J\x85end"
RAW = ("\x1b", "\x07", "\x9b", "\x85", "\u202e", "\r", "\t")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "bastion.toml"
    path.write_text('[server]\nlisten = "127.0.0.1:2999"\nstate_dir = "state"\n')
    run_bastion("init", "-c", str(path))
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "key")], check=True)
    return path


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_init_is_idempotent_and_prints_the_lines_clients_and_targets_need(config: Path) -> None:
    out = run_bastion("init", "-c", str(config)).stdout
    assert "already initialised" in out
    assert "@cert-authority * ssh-ed25519 " in out and "TrustedUserCAKeys" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--user", "Alice Smith"], "--user: expected a login name"),
        (["--user", "alice", "--ttl", "forever"], "--ttl: expected a duration"),
        (["--user", "alice", "--ttl", "48h"], "longer than [certificates] max_ttl"),
    ],
)
def test_cert_issue_refuses_bad_input(config: Path, args: list[str], message: str) -> None:
    result = run_bastion(
        "cert", "issue", "-c", str(config), *args, "--pubkey", str(config.parent / "key.pub"), check=False
    )
    assert message in one_line_error(result)
    assert not (config.parent / "key-cert.pub").exists()


def test_cert_issue_refuses_a_file_that_is_not_a_public_key(config: Path) -> None:
    bogus = config.parent / "bogus.pub"
    bogus.write_text("not a key\n")
    result = run_bastion("cert", "issue", "-c", str(config), "--user", "alice", "--pubkey", str(bogus), check=False)
    assert "is not an OpenSSH public key" in one_line_error(result)


def test_cert_issue_writes_a_certificate_openssh_accepts(config: Path) -> None:
    run_bastion(
        "cert",
        "issue",
        "-c",
        str(config),
        "--user",
        "alice",
        "--group",
        "ops",
        "--pubkey",
        str(config.parent / "key.pub"),
        "--ttl",
        "1h",
    )
    listing = subprocess.run(
        ["ssh-keygen", "-L", "-f", str(config.parent / "key-cert.pub")], capture_output=True, text=True, check=True
    ).stdout
    assert "Principals: \n                alice" in listing
    assert 'Key ID: "user=alice serial=' in listing
    assert "permit-pty" in listing and "permit-port-forwarding" in listing
    assert "permit-agent-forwarding" not in listing
    log = run_bastion("audit", "log", "-c", str(config), "--type", "cert.issued").stdout
    assert "user=alice" in log and "ops" in log


def test_unknown_session_and_bad_bundle(config: Path) -> None:
    assert "no session 'nope'" in one_line_error(run_bastion("audit", "export", "-c", str(config), "nope", check=False))
    bundle = config.parent / "bundle.json"
    nested = "[" * 100_000 + "]" * 100_000  # deeper than the JSON parser recurses
    unknown_key = json.dumps({"format": FORMAT, "public_key": "ssh-foo AAAA"})  # no such key type
    for text in ("{not json", "[]", json.dumps({"format": FORMAT, "public_key": 1}), nested, unknown_key):
        bundle.write_text(text)
        assert "FAILED" in one_line_error(run_bastion("audit", "verify", "--bundle", str(bundle), check=False))


def test_configuration_errors_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bastion.toml"
    path.write_text('[server]\nlisten = "nowhere"\n')
    line = one_line_error(run_bastion("sessions", "list", "-c", str(path), check=False))
    assert line.startswith(f"bastion: {path}: server.listen: expected")


def test_a_world_readable_ca_key_is_refused(config: Path) -> None:
    (config.parent / "state" / "user_ca").chmod(0o644)
    result = run_bastion(
        "cert", "issue", "-c", str(config), "--user", "alice", "--pubkey", str(config.parent / "key.pub"), check=False
    )
    assert "chmod 600" in one_line_error(result)


def test_serve_initialises_an_empty_state_directory(tmp_path: Path) -> None:
    import signal
    import socket

    from bastion.demo.targets import free_port

    port = free_port()
    path = tmp_path / "bastion.toml"
    path.write_text(f'[server]\nlisten = "127.0.0.1:{port}"\nstate_dir = "fresh-state"\n')
    process = subprocess.Popen(
        [str(BIN / "bastion"), "serve", "-c", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:

        def banner() -> bytes | None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                    return sock.recv(64)
            except OSError:  # not listening yet
                return None

        assert wait_until(banner, f"bastion serve to listen on port {port}", timeout=15).startswith(b"SSH-2.0-")
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=15)
    state = tmp_path / "fresh-state"
    assert (state.stat().st_mode & 0o777) == 0o700
    for name in ("user_ca", "host_ca", "upstream_ca", "audit"):
        assert (state / name).stat().st_mode & 0o777 == 0o600 and (state / f"{name}.pub").is_file()
    assert process.returncode == 0 and b'"event":"shutdown"' in err


# Stored text shown to people: one line per entry, marks instead of control characters, exact JSON.
def store_of(config: Path) -> SqliteStore:
    return SqliteStore(config_mod.load(str(config)).server.database_path)


def assert_no_raw_controls(text: str) -> None:
    found = [char for char in RAW if char in text]
    assert not found, f"raw control characters {found!r} in {text!r}"


def hostile_session(**overrides: object) -> SessionInfo:
    values: dict[str, object] = {
        "id": "s-hostile",
        "connection_id": "c1",
        "user": "al\x1b[8m",
        "groups": ("dev",),
        "cert_serial": 7,
        "cert_key_id": "alice",
        "source": "127.0.0.1:5000",
        "target": "web1",
        "login": "de\nploy",
        "target_address": "127.0.0.1:22",
        "kind": "exec",
        "command": HOSTILE,
        "started_at": 1_700_000_000.0,
        "status": "closed",
        "exit_status": 0,
    }
    values.update(overrides)
    return SessionInfo(**values)  # type: ignore[arg-type]


def test_audit_log_shows_hostile_fields_on_one_line_each_and_its_json_works(config: Path) -> None:
    store = store_of(config)
    try:
        store.log("policy.deny", text=HOSTILE, matched=["deny\x1b[2J", "r\u202e"], user="alice").result()
        store.log("cert.issued", user="bob\x07", groups=["ops"]).result()
    finally:
        store.close()

    lines = run_bastion("audit", "log", "-c", str(config), "--json").stdout.splitlines()
    assert lines and all(line.isascii() for line in lines)
    entries = [json.loads(line) for line in lines]
    assert_no_raw_controls("\n".join(lines))
    deny = next(e for e in entries if e["type"] == "policy.deny")
    assert deny["fields"]["text"] == HOSTILE  # exactly what was stored, escaped by JSON
    assert all(len(bytes.fromhex(e["leaf_hash"])) == 32 for e in entries)  # bytes as hex

    table = run_bastion("audit", "log", "-c", str(config)).stdout
    assert_no_raw_controls(table)
    rows = table.splitlines()
    assert len(rows) == len(entries)  # one line per entry: a newline in a field starts no row
    deny_row = next(row for row in rows if " policy.deny " in row)
    assert "text=echo hi␛]0;pwned\\x07␛]52;c;cHduZWQ=\\x07⏎second⏎ line \\u202eenil\\u202c \\x9b2J\\x85end" in deny_row
    assert "deny\\u001b[2J" in deny_row and "\\u202e" in deny_row  # inside a list: visible too
    assert "user=bob\\x07" in run_bastion("audit", "log", "-c", str(config), "--type", "cert.issued").stdout


def test_sessions_list_keeps_one_aligned_row_per_session(config: Path) -> None:
    store = store_of(config)
    try:
        store.put_session(hostile_session())
        store.put_session(hostile_session(id="s-plain", user="bob", login="mcp", command="ls", started_at=1.0))
        store.flush()
    finally:
        store.close()

    table = run_bastion("sessions", "list", "-c", str(config)).stdout
    assert_no_raw_controls(table)
    header, *rows = table.splitlines()
    assert len(rows) == 2
    hostile, plain = rows
    assert hostile.startswith("s-hostile ") and plain.startswith("s-plain ")
    assert "al␛[8m" in hostile and "de⏎ploy@web1" in hostile
    assert "exec: echo hi␛]0;pwned\\x07␛]5…" in hostile  # cut to its column, and shown to be cut
    for row in rows:  # the columns line up: every sanitised field is padded after it was made visible
        assert row.index("exit 0") == header.index("STATUS")

    listed = run_bastion("sessions", "list", "-c", str(config), "--json").stdout
    assert listed.isascii()
    assert_no_raw_controls(listed)
    assert {s["id"]: s["command"] for s in json.loads(listed)}["s-hostile"] == HOSTILE


def test_audit_verify_quotes_a_tampered_database_safely(config: Path) -> None:
    # A copy under verification may hold anything; its problems quote ids the attacker chose.
    store = store_of(config)
    try:
        store.put_session(hostile_session(id="x\x1b]0;pwned\x07\ny"))
        store.flush()
    finally:
        store.close()
    database = config_mod.load(str(config)).server.database_path
    args = ("audit", "verify", "--database", str(database), "--pubkey", str(config.parent / "state" / "audit.pub"))
    result = run_bastion(*args, check=False)
    assert result.returncode == 1
    assert_no_raw_controls(result.stdout + result.stderr)
    problems = json.loads(run_bastion(*args, "--json", check=False).stdout)["problems"]
    lines = result.stderr.splitlines()
    assert len(lines) == len(problems)  # one line per problem
    assert "FAILED: session x␛]0;pwned\\x07⏎y: has no seal" in lines


def test_a_hostile_bundle_is_quoted_safely(config: Path) -> None:
    public = (config.parent / "state" / "audit.pub").read_text().strip()
    bundle = config.parent / "bundle.json"
    bundle.write_text(
        json.dumps(
            {
                "format": FORMAT,
                "public_key": public,
                "origin": "o",
                "session": {"id": "\x1b]0;pwned\x07\nsid"},
                "events": [],
                "seal": {"body": {"events": 0}, "signature": "AAAA"},
            }
        )
    )
    line = one_line_error(run_bastion("audit", "verify", "--bundle", str(bundle), check=False))
    assert_no_raw_controls(line)
    assert "FAILED: session ␛]0;pwned\\x07⏎sid: " in line


@given(st.text())
def test_sanitised_text_is_one_line_without_escape_or_bell(text: str) -> None:
    # What the tables rely on: no character that a terminal or str.splitlines() takes for a new line.
    shown = sanitize_for_display(text)
    assert len(shown.splitlines()) <= 1 and not any(char in shown for char in RAW)
