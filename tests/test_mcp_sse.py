"""The event-stream parser the HTTP proxy will use: events whole at any split, ids and retry kept, bounded."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.mcp.sse import SseEvent, SseParser, comment, encode_event

STREAM = (
    b": keep-alive\n\n"
    b'id: 1\nretry: 3000\ndata: {"jsonrpc":"2.0","method":"notifications/progress"}\n\n'
    b'event: message\r\nid: 2\r\ndata: {"jsonrpc":"2.0",\r\ndata: "id":1,"result":{}}\r\n\r\n'
    b"id: 3\rdata: last\r\r"
)


def parsed(stream: bytes, cuts: list[int]) -> list[SseEvent]:
    parser = SseParser(max_event=4096)
    events: list[SseEvent] = []
    points = sorted({0, *(cut % (len(stream) + 1) for cut in cuts), len(stream)})
    for start, end in itertools.pairwise(points):
        events += parser.feed(stream[start:end])
    return events + parser.end()


def test_events_with_ids_retry_comments_and_every_line_ending() -> None:
    events = parsed(STREAM, [])
    assert [e.comments for e in events] == [[" keep-alive"], [], [], []]
    assert [(e.id, e.retry) for e in events[1:]] == [("1", "3000"), ("2", None), ("3", None)]
    assert json.loads(events[2].data) == {"jsonrpc": "2.0", "id": 1, "result": {}}
    assert events[2].event == "message" and events[3].data == "last"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=10))
def test_any_split_gives_the_same_events(cuts: list[int]) -> None:
    assert parsed(STREAM, cuts) == parsed(STREAM, [])


def test_written_back_events_parse_to_the_same_events() -> None:
    events = parsed(STREAM, [])
    again = parsed(b"".join(encode_event(e) for e in events), [])
    assert again == events
    assert parsed(comment("waiting for approval 3"), []) == [SseEvent(comments=[" waiting for approval 3"])]


def test_a_line_or_an_event_over_the_limit_is_an_error() -> None:
    with pytest.raises(ValueError, match="line over 64 bytes"):
        SseParser(64).feed(b"data: " + b"x" * 100)
    with pytest.raises(ValueError, match="event over 64 bytes"):
        SseParser(64).feed(b"data: " + b"x" * 40 + b"\ndata: " + b"y" * 40 + b"\n")
