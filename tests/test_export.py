"""Exports of a recorded session: asciicast, rendered text and JSON Lines."""

from __future__ import annotations

import base64
import json

import pytest

from bastion.audit.events import (
    EXEC,
    EXIT,
    MARKER,
    PTY,
    RESIZE,
    STDERR,
    STDOUT,
    TRANSFER,
    Event,
    SessionInfo,
    encode_fields,
)
from bastion.audit.export import FORMATS, render, to_asciicast, to_jsonl, to_text

START = 1_700_000_000.25


def session(**overrides: object) -> SessionInfo:
    values: dict[str, object] = {
        "id": "s1",
        "connection_id": "c1",
        "user": "alice",
        "groups": ("ops", "dba"),
        "cert_serial": 7,
        "cert_key_id": "alice@laptop",
        "source": "192.0.2.1:50000",
        "target": "web1",
        "target_address": "10.0.0.5",
        "login": "deploy",
        "kind": "shell",
        "term": "xterm",
        "cols": 80,
        "rows": 24,
        "started_at": START,
    }
    values.update(overrides)
    return SessionInfo(**values)  # type: ignore[arg-type]


def exec_session() -> SessionInfo:
    return session(kind="exec", command="make test", term="", cols=0, rows=0)


class Recorder:
    """Builds events with increasing sequence numbers at given offsets from START."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def add(self, at: float, type_: str, data: bytes = b"", **fields: object) -> Recorder:
        payload = encode_fields(**fields) if fields else data
        self.events.append(Event("s1", len(self.events) + 1, START + at, type_, payload))
        return self

    def out(self, at: float, data: bytes) -> Recorder:
        return self.add(at, STDOUT, data)

    def err(self, at: float, data: bytes) -> Recorder:
        return self.add(at, STDERR, data)


def cast_lines(text: str) -> tuple[dict, list[list]]:
    assert text.endswith("\n")
    header, *rest = (json.loads(line) for line in text.splitlines())
    return header, rest


def output_of(frames: list[list]) -> str:
    return "".join(frame[2] for frame in frames if frame[1] == "o")


# asciicast


def test_asciicast_header_describes_the_session() -> None:
    rec = Recorder().add(0, PTY, term="xterm-256color", cols=132, rows=43).out(0.5, b"$ ")
    header, _ = cast_lines(to_asciicast(session(), rec.events))
    assert header == {
        "version": 2,
        "width": 132,
        "height": 43,
        "timestamp": 1_700_000_000,
        "title": "alice@web1 as deploy: shell",
        "env": {"TERM": "xterm-256color"},
    }


def test_asciicast_header_defaults_to_80x24_and_names_the_command() -> None:
    header, _ = cast_lines(to_asciicast(exec_session(), Recorder().out(0.1, b"ok\n").events))
    assert (header["width"], header["height"]) == (80, 24)
    assert header["title"] == "alice@web1 as deploy: make test"


HOSTILE = "echo hi\x1b]0;pwned\x07\x1b]52;c;cHduZWQ=\x07\nsecond \u202eline\x9b2J"


def test_asciicast_metadata_is_sanitised_and_the_recorded_output_is_not() -> None:
    # The title, env and marker labels are text users chose, shown by players; the output events
    # are what the terminal showed, and a replay must show it as it was.
    hostile = session(kind="exec", command=HOSTILE, user="al\x1b[8mice", login="de\nploy", term="xterm\x07\x1b]0;t\x07")
    rec = Recorder().add(0, EXEC, command=HOSTILE).out(0.5, b"\x1b]0;shown\x07out\r\n")
    rec.add(1, TRANSFER, op="write", path="/tmp/\x1b[2Jx\ny", bytes=1, protocol="sftp")
    rec.add(2, MARKER, text="note\x07\u202e")
    text = to_asciicast(hostile, rec.events)
    header, frames = cast_lines(text)
    assert header["title"] == (
        "al␛[8mice@web1 as de⏎ploy: echo hi␛]0;pwned\\x07␛]52;c;cHduZWQ=\\x07⏎second \\u202eline\\x9b2J"
    )
    assert header["env"] == {"TERM": "xterm\\x07␛]0;t\\x07"}
    labels = [frame[2] for frame in frames if frame[1] == "m"]
    assert labels == [
        "exec: echo hi␛]0;pwned\\x07␛]52;c;cHduZWQ=\\x07⏎second \\u202eline\\x9b2J",
        "write /tmp/␛[2Jx⏎y (1 bytes)",
        "note\\x07\\u202e",
    ]
    assert output_of(frames) == "\x1b]0;shown\x07out\r\n"  # the recorded output, exactly
    assert "\x1b" not in text and "\x07" not in text  # JSON escapes it in the file itself


def test_a_long_hostile_marker_label_is_cut_after_sanitising() -> None:
    rec = Recorder().add(0, EXEC, command="\x07" * 100)
    _, frames = cast_lines(to_asciicast(exec_session(), rec.events))
    label = frames[0][2]
    assert len(label) == 120 and label.endswith("…") and label.startswith("exec: \\x07\\x07")


def test_text_and_jsonl_exports_carry_no_raw_control_characters_from_metadata() -> None:
    hostile = session(kind="exec", command=HOSTILE, term="", cols=0, rows=0)
    rec = Recorder().add(0, EXEC, command=HOSTILE).out(0.5, b"plain\n")
    assert to_text(hostile, rec.events) == "plain\n"  # no header: only what the screen showed
    jsonl = to_jsonl(hostile, rec.events)
    assert "\x1b" not in jsonl and "\x07" not in jsonl and "\u202e" not in jsonl
    first = json.loads(jsonl.splitlines()[0])
    assert first["session"]["command"] == HOSTILE  # exact, escaped by JSON


def test_asciicast_header_uses_the_pty_size_in_force_when_output_starts() -> None:
    rec = Recorder().add(0, PTY, term="xterm", cols=100, rows=30).out(1, b"x")
    rec.add(2, PTY, term="xterm", cols=10, rows=5)  # after output: not the initial size
    header, _ = cast_lines(to_asciicast(session(cols=0, rows=0), rec.events))
    assert (header["width"], header["height"]) == (100, 30)


def test_asciicast_times_are_relative_monotonic_and_every_line_is_json() -> None:
    rec = Recorder().out(1.5, b"one\r\n").err(2.0, b"oops\r\n")
    rec.out(1.0, b"clock went back\r\n")  # recorded clocks can step backwards
    rec.add(3.25, RESIZE, cols=120, rows=40).add(4, EXEC, command="ls -l").add(5, EXIT, status=3)
    rec.add(-10, MARKER, text="before the start")
    text = to_asciicast(session(), rec.events)
    _, frames = cast_lines(text)
    times = [frame[0] for frame in frames]
    assert times[:4] == [1.5, 2.0, 2.0, 3.25]
    assert times == sorted(times) and min(times) >= 0
    assert all(round(t, 6) == t for t in times)
    assert [frame[1:] for frame in frames] == [
        ["o", "one\r\n"],
        ["o", "oops\r\n"],
        ["o", "clock went back\r\n"],
        ["r", "120x40"],
        ["m", "exec: ls -l"],
        ["m", "exit 3"],
        ["m", "before the start"],
    ]


def test_asciicast_marks_transfers_and_signals() -> None:
    rec = Recorder().add(1, TRANSFER, op="write", path="/etc/motd", bytes=12, protocol="sftp")
    rec.add(2, EXIT, signal="KILL", core_dumped=False, message="")
    _, frames = cast_lines(to_asciicast(session(), rec.events))
    assert [frame[2] for frame in frames] == ["write /etc/motd (12 bytes)", "signal KILL"]


def test_asciicast_decodes_a_character_split_across_events() -> None:
    euro = "€".encode()
    rec = Recorder().out(1, b"price " + euro[:1]).err(1.5, b"warn ").out(2, euro[1:] + b"5")
    _, frames = cast_lines(to_asciicast(session(), rec.events))
    assert output_of(frames) == "price warn €5"
    assert "\ufffd" not in output_of(frames)


def test_asciicast_replaces_invalid_utf8_instead_of_failing() -> None:
    _, frames = cast_lines(to_asciicast(session(), Recorder().out(1, b"a\xffb\xe2\x82").events))
    assert output_of(frames) == "a\ufffdb\ufffd"


# text, pty sessions


def numbered(count: int) -> list[Event]:
    rec = Recorder()
    for i in range(count):
        rec.out(i / 1000, f"line {i:05d}\r\n".encode())
    return rec.events


def test_text_keeps_every_line_that_scrolled_off_the_screen() -> None:
    assert to_text(session(), numbered(300)).splitlines() == [f"line {i:05d}" for i in range(300)]


def test_text_keeps_ten_thousand_lines_of_scrollback() -> None:
    lines = to_text(session(), numbered(10_000)).splitlines()
    assert len(lines) == 10_000
    assert lines[0] == "line 00000" and lines[-1] == "line 09999"


def test_text_renders_carriage_return_overwrite_as_the_screen_showed_it() -> None:
    assert to_text(session(), Recorder().out(0, b"abc\rX").events) == "Xbc\n"


def test_text_ends_with_one_newline_and_no_trailing_blanks() -> None:
    text = to_text(session(), Recorder().out(0, b"$ ls   \r\nfile\r\n\r\n$ ").events)
    assert text == "$ ls\nfile\n\n$\n"


@pytest.mark.parametrize(
    "clear",
    [b"\x1b[H\x1b[2J", b"\x1b[H\x1b[2J\x1b[3J", b"\x1b[H\x1b[J", b"\x1bc"],
    ids=["ED2", "ED2+ED3", "home+ED0", "RIS"],
)
def test_text_clear_screen_does_not_lose_what_was_shown(clear: bytes) -> None:
    events = numbered(40)
    rec = Recorder()
    rec.events = events
    rec.out(1, clear).out(2, b"after clear\r\n$ ")
    lines = to_text(session(), rec.events).splitlines()
    assert lines == [f"line {i:05d}" for i in range(40)] + ["after clear", "$"]


def test_text_applies_resize() -> None:
    rec = Recorder().out(0, b"first\r\n").add(1, RESIZE, cols=10, rows=5)
    rec.out(2, b"0123456789abcdef\r\n")
    assert to_text(session(), rec.events) == "first\n0123456789\nabcdef\n"


def test_text_shrinking_the_window_keeps_lines_in_scrollback() -> None:
    rec = Recorder()
    rec.events = numbered(30)
    rec.add(1, RESIZE, cols=80, rows=5).out(2, b"$ ")
    lines = to_text(session(), rec.events).splitlines()
    assert lines == [f"line {i:05d}" for i in range(30)] + ["$"]


def test_text_uses_the_pty_event_size_when_the_session_has_none() -> None:
    rec = Recorder().add(0, PTY, term="vt100", cols=10, rows=3).out(1, b"0123456789abcdef")
    assert to_text(session(term="", cols=0, rows=0), rec.events) == "0123456789\nabcdef\n"


def test_text_decodes_a_character_split_across_events() -> None:
    snow = "☃".encode()
    rec = Recorder().out(0, b"let it " + snow[:2]).err(0.5, b"!").out(1, snow[2:] + b" go")
    assert to_text(session(), rec.events) == "let it !☃ go\n"


def test_text_survives_malformed_bytes_and_sequences() -> None:
    rec = Recorder().out(0, b"\xff\xfe bad utf8\r\n")
    rec.out(1, b"\x1b[5Jvisible-1\r\n")  # pyte itself raises on ED 5
    rec.out(2, b"\x1b[?1;2Avisible-2\r\n\x1b]0;never terminated")
    rec.out(3, b"\x1b[99999999999999999999;9999999999H\x1b[r\x1b#8\x1b(0")
    text = to_text(session(), rec.events)
    assert "\ufffd\ufffd bad utf8" in text
    assert "visible-1" in text and "visible-2" in text


# text, sessions without a pty


def test_text_of_exec_without_pty_strips_escape_sequences_and_controls() -> None:
    rec = Recorder().out(0, b"\x1b[1;31mred\x1b[0m\tcol\r\n\x1b]0;title\x07plain\x08\x00\n")
    assert to_text(exec_session(), rec.events) == "red\tcol\nplain\n"


def test_text_of_exec_without_pty_interleaves_stderr_in_arrival_order() -> None:
    rec = Recorder().out(0, b"out 1\n").err(1, b"err 1\n").out(2, b"out 2\n")
    assert to_text(exec_session(), rec.events) == "out 1\nerr 1\nout 2\n"


def test_text_of_exec_without_pty_handles_sequences_and_characters_split_across_events() -> None:
    rec = Recorder().out(0, b"a\x1b[3").err(0.5, b"E").out(1, b"1mb\xc3").out(2, b"\xa9\x1b]0;ti")
    rec.out(3, b"tle\x07c\xff")
    assert to_text(exec_session(), rec.events) == "aEbéc\ufffd"


# jsonl


def test_jsonl_roundtrips_session_and_exact_bytes() -> None:
    raw = b"ok \xff\xfe\x1b[0m caf\xc3\xa9"
    rec = Recorder().out(0.5, raw).add(1, EXIT, status=0)
    text = to_jsonl(session(), rec.events)
    assert text.endswith("\n")
    first, out, exit_ = (json.loads(line) for line in text.splitlines())
    assert first["session"]["groups"] == ["ops", "dba"]
    assert first["session"]["user"] == "alice" and first["session"]["started_at"] == START
    assert base64.b64decode(out["data_b64"]) == raw
    assert out["data"] == "ok \\xff\\xfe\x1b[0m café"
    assert (out["seq"], out["ts"], out["type"]) == (1, START + 0.5, "stdout")
    assert exit_ == {"fields": {"status": 0}, "seq": 2, "ts": START + 1, "type": "exit"}


def test_jsonl_lines_have_sorted_keys_and_compact_separators() -> None:
    rec = Recorder().out(0, b"x").add(1, TRANSFER, op="read", path="/a b", bytes=3, protocol="sftp")
    for line in to_jsonl(session(), rec.events).splitlines():
        value = json.loads(line)
        assert line == json.dumps(value, sort_keys=True, separators=(",", ":"))


def test_jsonl_keeps_an_unparsable_payload() -> None:
    events = [Event("s1", 1, START, MARKER, b"{not json")]
    record = json.loads(to_jsonl(session(), events).splitlines()[1])
    assert base64.b64decode(record["data_b64"]) == b"{not json"


# dispatch


def test_render_dispatches_every_format() -> None:
    events = Recorder().out(0, b"hi\r\n").events
    assert FORMATS == ("asciicast", "text", "jsonl")
    assert render("asciicast", session(), events) == to_asciicast(session(), events)
    assert render("text", session(), events) == "hi\n"
    assert render("jsonl", session(), iter(events)) == to_jsonl(session(), events)


def test_render_rejects_an_unknown_format() -> None:
    with pytest.raises(ValueError) as excinfo:
        render("html", session(), [])
    assert str(excinfo.value) == "unknown export format 'html'; expected one of asciicast, text, jsonl"
