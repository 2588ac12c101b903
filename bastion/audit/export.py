"""Exports of a session recording: asciicast v2 for replay, rendered text, JSON Lines.
Pure functions from a session's metadata and events to a string; no storage, no I/O.

What the session showed (asciicast output events, the rendered text) is its content and stays as
recorded; the metadata a player shows about it (the asciicast title, env and marker labels: commands,
names, paths users chose) goes through the sanitiser (docs/architecture.md, "Text people see").
"""

from __future__ import annotations

import base64
import codecs
import dataclasses
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pyte

from bastion.audit import events as ev
from bastion.audit.events import BYTE_TYPES, Event, SessionInfo
from bastion.display import sanitize_for_display

FORMATS = ("asciicast", "text", "jsonl")

# Recorded sizes come from the client; bound them so a hostile window-change
# cannot make the renderer allocate or loop without limit.
_MAX_DIM = 1000
_LABEL_MAX = 120
_HISTORY = 100_000

_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI
    # OSC and the other string sequences end at BEL or ST; they also end at a newline
    # so that a broken one cannot hide the rest of the output from the export.
    r"|\x1b[\]PX^_][^\x07\x1b\n]*(?:\x07|\x1b\\)?"
    r"|\x1b[ -/]*[0-~]"  # two-character and charset-designation escapes
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]"  # controls but \t and \n (and stray ESC)
)
# An escape sequence cut short by the end of a chunk: held back until the next chunk.
# Bounded, so that an unterminated string sequence is not re-scanned chunk after chunk.
_PARTIAL_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*|[\]PX^_][^\x07\x1b\n]{0,1024}\x1b?|[ -/]*)?\Z")


def _dumps(value: Any, *, sort_keys: bool = True) -> str:
    return json.dumps(value, sort_keys=sort_keys, separators=(",", ":"), default=str)


def _fields(event: Event) -> dict[str, Any] | None:
    """The event's JSON payload, or None when it does not parse."""
    try:
        return event.fields()
    except (ValueError, RecursionError):
        return None


def _dim(value: Any, fallback: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return min(value, _MAX_DIM)
    return fallback


def _initial_pty(session: SessionInfo, events: list[Event]) -> tuple[int, int, dict[str, str]]:
    """(cols, rows, {TERM, SHELL}) in force when the output started."""
    cols, rows = _dim(session.cols, 80), _dim(session.rows, 24)
    env = {"TERM": session.term} if session.term else {}
    for event in events:
        if event.type in BYTE_TYPES:
            break
        fields = _fields(event) or {}
        if event.type == ev.PTY:
            cols, rows = _dim(fields.get("cols"), cols), _dim(fields.get("rows"), rows)
            env["TERM"] = str(fields.get("term") or env.get("TERM", ""))
        elif event.type == ev.ENV and fields.get("name") == "SHELL":
            env["SHELL"] = str(fields.get("value", ""))
    return cols, rows, {name: value for name, value in env.items() if value}


def _marker_label(event: Event) -> str | None:
    fields = _fields(event) or {}
    if event.type == ev.EXEC:
        label = f"exec: {fields.get('command', '')}"
    elif event.type == ev.EXIT and fields.get("signal"):
        label = f"signal {fields['signal']}" + (" (core dumped)" if fields.get("core_dumped") else "")
    elif event.type == ev.EXIT:
        label = f"exit {fields.get('status', '?')}"
    elif event.type == ev.TRANSFER:
        label = f"{fields.get('op', '?')} {fields.get('path', '?')} ({fields.get('bytes', '?')} bytes)"
    elif event.type == ev.MARKER:
        label = str(fields.get("text", ""))
    else:
        return None
    label = sanitize_for_display(label)
    return label if len(label) <= _LABEL_MAX else label[: _LABEL_MAX - 1] + "…"


def to_asciicast(session: SessionInfo, events: Iterable[Event]) -> str:
    """The session as an asciicast v2 recording, playable with `asciinema play`."""
    events = list(events)
    cols, rows, env = _initial_pty(session, events)
    command = session.command or "shell"
    header = {
        "version": 2,
        "width": cols,
        "height": rows,
        "timestamp": int(session.started_at),
        "title": sanitize_for_display(f"{session.user}@{session.target} as {session.login}: {command}"),
        "env": {name: sanitize_for_display(value) for name, value in env.items()},
    }
    lines = [_dumps(header, sort_keys=False)]  # "version" first, as recorders write it
    origin = session.started_at or (events[0].ts if events else 0.0)
    now = 0.0
    # One decoder per stream: a character split across chunks of one stream must not
    # be mangled by a chunk of the other arriving in between.
    decoders = {t: codecs.getincrementaldecoder("utf-8")(errors="replace") for t in BYTE_TYPES}
    for event in events:
        # Players need non-decreasing times; recorded clocks are not guaranteed to be.
        now = max(now, round(max(0.0, event.ts - origin), 6))
        if event.type in decoders:
            text = decoders[event.type].decode(event.data)
            if text:
                lines.append(_dumps([now, "o", text]))
        elif event.type == ev.RESIZE:
            fields = _fields(event) or {}
            cols, rows = _dim(fields.get("cols"), cols), _dim(fields.get("rows"), rows)
            lines.append(_dumps([now, "r", f"{cols}x{rows}"]))
        elif (label := _marker_label(event)) is not None:
            lines.append(_dumps([now, "m", label]))
    for decoder in decoders.values():
        if tail := decoder.decode(b"", final=True):
            lines.append(_dumps([now, "o", tail]))
    return "\n".join(lines) + "\n"


def _render_line(line: Mapping[int, Any]) -> str:
    # Lines are sparse; wide characters are followed by an empty stub cell.
    width = max(line, default=-1) + 1
    return "".join(line[x].data if x in line else " " for x in range(width)).rstrip(" ")


class _AuditScreen(pyte.HistoryScreen):
    """A HistoryScreen that loses nothing that was shown and never raises on bad input."""

    def __getattribute__(self, attr: str) -> Any:
        # Bypasses HistoryScreen's own wrapper: it only serves paging, which we never do.
        value = object.__getattribute__(self, attr)
        if attr not in pyte.Stream.events:
            return value
        handler: Callable[..., Any] = value

        def tolerant(*args: Any, **kwargs: Any) -> Any:
            # pyte's handlers trip over malformed sequences (unexpected parameters,
            # unknown modes) and the exception aborts the rest of the chunk; a terminal
            # ignores such sequences, and so do we.
            try:
                return handler(*args, **kwargs)
            except Exception:
                return None

        return tolerant

    def _scroll_off(self, rows: range) -> None:
        for y in rows:
            self.history.top.append(self.buffer[y])
            del self.buffer[y]

    def _save_screen(self) -> None:
        """Move the screen's lines, down to the last non-blank one, into scroll-back."""
        used = [y for y in range(self.lines) if y in self.buffer and _render_line(self.buffer[y])]
        self._scroll_off(range(max(used, default=-1) + 1))

    def erase_in_display(self, how: int = 0, *args: Any, **kwargs: Any) -> None:
        # A clear would drop what was on screen without it ever reaching scroll-back,
        # and ED 3 (clear scroll-back) must not erase the audit trail.
        if how in (2, 3) or (how == 0 and self.cursor.y == 0 and self.cursor.x == 0):
            self._save_screen()
        pyte.Screen.erase_in_display(self, how, *args, **kwargs)

    def alignment_display(self) -> None:
        # DECALN fills the screen with "E"s: a test pattern, no content, and at the largest
        # screen sizes a cheap way to make the export crawl.
        pass

    def reset(self) -> None:
        self._save_screen()
        pyte.Screen.reset(self)

    def resize(self, lines: int | None = None, columns: int | None = None) -> None:
        lines = lines or self.lines
        if lines < self.lines:
            # pyte drops the top rows outright; like xterm, scroll only as far as the
            # cursor's row needs to stay visible, and keep what scrolls off.
            shift = max(0, self.cursor.y - lines + 1)
            self._scroll_off(range(shift))
            kept = {y - shift: row for y, row in self.buffer.items() if shift <= y < shift + lines}
            self.buffer.clear()
            self.buffer.update(kept)
            self.cursor.y -= shift
            self.lines, self.margins = lines, None
        super().resize(lines, columns)


def _strip_controls(events: list[Event]) -> str:
    decoders = {t: codecs.getincrementaldecoder("utf-8")(errors="replace") for t in BYTE_TYPES}
    pending = dict.fromkeys(BYTE_TYPES, "")
    out: list[str] = []
    for event in events:
        if event.type in decoders:
            text = pending[event.type] + decoders[event.type].decode(event.data)
            partial = _PARTIAL_ESCAPE.search(text)
            cut = partial.start() if partial else len(text)
            pending[event.type] = text[cut:]
            out.append(_ESCAPES.sub("", text[:cut]))
    for kind, decoder in decoders.items():
        out.append(_ESCAPES.sub("", pending[kind] + decoder.decode(b"", final=True)))
    return "".join(out)


def to_text(session: SessionInfo, events: Iterable[Event]) -> str:
    """What the terminal showed, scroll-back included; plain output for sessions without a pty."""
    events = list(events)
    if not session.term and not any(event.type == ev.PTY for event in events):
        return _strip_controls(events)
    cols, rows, _ = _initial_pty(session, events)
    screen = _AuditScreen(cols, rows, history=_HISTORY)
    # Separate streams keep each one's UTF-8 and escape-sequence state apart.
    streams = {ev.STDOUT: pyte.ByteStream(screen), ev.STDERR: pyte.ByteStream(screen)}
    for event in events:
        if event.type in streams:
            streams[event.type].feed(event.data)
        elif event.type == ev.RESIZE:
            fields = _fields(event) or {}
            screen.resize(_dim(fields.get("rows"), screen.lines), _dim(fields.get("cols"), screen.columns))
    for stream in streams.values():
        if stream.use_utf8 and (tail := stream.utf8_decoder.decode(b"", final=True)):
            pyte.Stream.feed(stream, tail)
    lines = [_render_line(line) for line in screen.history.top]
    lines += [_render_line(screen.buffer[y]) for y in range(screen.lines)]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n" if lines else ""


def to_jsonl(session: SessionInfo, events: Iterable[Event]) -> str:
    """The session and every event as JSON Lines, exact bytes recoverable from data_b64."""
    lines = [_dumps({"session": dataclasses.asdict(session)})]
    for event in events:
        record: dict[str, Any] = {"seq": event.seq, "ts": event.ts, "type": event.type}
        if event.type in BYTE_TYPES:
            record["data"] = event.data.decode("utf-8", errors="backslashreplace")
            record["data_b64"] = base64.b64encode(event.data).decode("ascii")
        else:
            fields = _fields(event)
            record["fields"] = fields or {}
            if fields is None:
                # Keep a payload we could not parse rather than lose it.
                record["data_b64"] = base64.b64encode(event.data).decode("ascii")
        lines.append(_dumps(record))
    return "\n".join(lines) + "\n"


_RENDERERS = {"asciicast": to_asciicast, "text": to_text, "jsonl": to_jsonl}


def render(fmt: str, session: SessionInfo, events: Iterable[Event]) -> str:
    """Export a session in one of FORMATS."""
    renderer = _RENDERERS.get(fmt)
    if renderer is None:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return renderer(session, events)
