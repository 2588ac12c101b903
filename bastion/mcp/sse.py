"""Server-sent events as MCP's Streamable HTTP carries them: parsed event by event, written back; pure.

Groundwork for the HTTP proxy (issue 17): each event's `data` is one JSON-RPC message for the inspector;
`id` and `retry` pass through unchanged, comments (keep-alives) too. Lines end in LF, CRLF or CR; an
event ends at a blank line. A line or an event over `max_event` bytes is an error, never a growing buffer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["SseEvent", "SseParser", "comment", "encode_event"]


@dataclass
class SseEvent:
    data: str = ""
    event: str | None = None
    id: str | None = None
    retry: str | None = None
    comments: list[str] = field(default_factory=list)  # comment lines before or inside the event


class SseParser:
    """Bytes of an event stream in, whole events out."""

    def __init__(self, max_event: int) -> None:
        self._max = max_event
        self._buffer = b""
        self._data: list[str] = []
        self._current = SseEvent()
        self._size = 0

    def feed(self, data: bytes) -> list[SseEvent]:
        self._buffer += data
        events: list[SseEvent] = []
        while True:
            cut = _line_end(self._buffer)
            if cut is None:
                if len(self._buffer) > self._max:
                    raise ValueError(f"an event-stream line over {self._max} bytes")
                return events
            end, after = cut
            line = self._buffer[:end].decode("utf-8", "replace")
            self._buffer = self._buffer[after:]
            self._size += after
            if self._size > self._max:
                raise ValueError(f"an event over {self._max} bytes")
            if line:
                self._line(line)
                continue
            event = self._finish()
            if event is not None:
                events.append(event)

    def end(self) -> list[SseEvent]:
        """The stream ended: a CR left at the end closes its line (an unfinished event is dropped, as
        browsers do)."""
        return self.feed(b"\n") if self._buffer.endswith(b"\r") else []

    def _line(self, line: str) -> None:
        name, colon, value = line.partition(":")
        if not name and colon:
            self._current.comments.append(value)
            return
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._current.event = value
        elif name == "id" and "\0" not in value:
            self._current.id = value
        elif name == "retry" and value.isdigit():
            self._current.retry = value

    def _finish(self) -> SseEvent | None:
        event, self._current = self._current, SseEvent()
        event.data = "\n".join(self._data)
        had_data, self._data, self._size = bool(self._data), [], 0
        nothing = not had_data and event.event is None and event.id is None and event.retry is None
        return None if nothing and not event.comments else event


def _line_end(buffer: bytes) -> tuple[int, int] | None:
    """Where the first line ends and the next begins (LF, CRLF or CR); None while no line is complete."""
    lf, cr = buffer.find(b"\n"), buffer.find(b"\r")
    if cr < 0 and lf < 0:
        return None
    if cr < 0 or 0 <= lf < cr:
        return lf, lf + 1
    if cr + 1 == len(buffer):
        return None  # a CR at the end: an LF may follow
    return cr, cr + (2 if buffer[cr + 1 : cr + 2] == b"\n" else 1)


def encode_event(event: SseEvent) -> bytes:
    lines = [f":{text}" for text in event.comments]
    if event.event is not None:
        lines.append(f"event: {event.event}")
    if event.id is not None:
        lines.append(f"id: {event.id}")
    if event.retry is not None:
        lines.append(f"retry: {event.retry}")
    lines += [f"data: {line}" for line in event.data.split("\n")] if event.data else []
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def comment(text: str) -> bytes:
    """A keep-alive comment (clients ignore it)."""
    return f": {text}\n\n".encode()
