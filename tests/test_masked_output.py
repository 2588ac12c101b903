"""A session's masked output over time, on its two paths: the recording gets only what is decided,
whatever the timing of the pieces; the client is shown held bytes at once unless they complete a strong
prefix, which waits up to `strong_hold`.

Time is the test's own (`ManualClock`): pieces arrive at chosen instants, timers fire when the clock
passes them, and nothing sleeps.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.masking.config import MaskingSettings
from bastion.masking.masker import HELD_LIMIT, Masker
from bastion.masking.output import MaskedOutput

MASKER = Masker.from_settings(MaskingSettings())
LINE = b"2024-05-01 12:00:00 worker started job id="


class _Timer:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A Scheduler whose time moves only when the test says; `call_soon` runs at the end of the current turn."""

    def __init__(self) -> None:
        self.now = 0.0
        self._soon: list[Callable[[], None]] = []
        self._timers: list[tuple[float, int, _Timer, Callable[[], None]]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self.now

    def call_soon(self, callback: Callable[[], None]) -> object:
        self._soon.append(callback)
        return None

    def call_at(self, when: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer()
        heapq.heappush(self._timers, (when, next(self._order), timer, callback))
        return timer

    def call_later(self, delay: float, callback: Callable[[], None]) -> _Timer:
        return self.call_at(self.now + delay, callback)

    def end_turn(self) -> None:
        while self._soon:
            self._soon.pop(0)()

    def advance_to(self, when: float) -> None:
        """End this turn, then fire every timer due up to `when`, in order, each in a turn of its own."""
        self.end_turn()
        while self._timers and self._timers[0][0] <= when:
            due, _, timer, callback = heapq.heappop(self._timers)
            self.now = max(self.now, due)
            if not timer.cancelled:
                callback()
                self.end_turn()
        self.now = max(self.now, when)


KEY_BODY = [
    b"b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW",
    b"QyNTUxOQAAACDJ2Zc2Jv1Ek4mS1Y5nN3Q2a2N4eXlLc1d6R0pJb2Z5ZkVBAAAAoB7c8Hge3P",
    b"B4AAAAC3NzaC1lZDI1NTE5AAAAIMnZlzYm/USTiZLVjmc3dDZrY3h5eUtzV3pGSklvZnlmRE",
]
KEY_PEM = b"-----BEGIN OPENSSH PRIVATE KEY-----\n" + b"\n".join(KEY_BODY) + b"\n-----END OPENSSH PRIVATE KEY-----\n"


class Run:
    """Pieces fed at chosen instants; what each path got, with the time it got it."""

    def __init__(self, idle_release: float = 0.0, strong_hold: float = 1.0) -> None:
        self.clock = ManualClock()
        self.shown: list[tuple[float, bytes]] = []
        self.recorded: list[tuple[float, bytes]] = []
        self.output = MaskedOutput(
            MASKER,
            self.clock,
            show=lambda data, _: self.shown.append((self.clock.now, data)),
            record=lambda data, _: self.recorded.append((self.clock.now, data)),
            idle_release=idle_release,
            strong_hold=strong_hold,
        )

    def feed(self, pieces: list[tuple[float, bytes]], quiet: float = 5.0) -> Run:
        """Each piece at its time, then `quiet` seconds without output, then EOF."""
        for when, piece in pieces:
            self.clock.advance_to(when)
            self.output.feed(piece, False)
        self.clock.advance_to(self.clock.now + quiet)
        self.output.flush()
        return self

    def client_at(self) -> list[tuple[float, bytes]]:
        """What the client got, joined by the instant it got it."""
        joined: list[tuple[float, bytes]] = []
        for when, data in self.shown:
            if joined and joined[-1][0] == when:
                joined[-1] = (when, joined[-1][1] + data)
            else:
                joined.append((when, data))
        return joined

    @property
    def client(self) -> bytes:
        return b"".join(data for _, data in self.shown)

    @property
    def recording(self) -> bytes:
        return b"".join(data for _, data in self.recorded)


def apart(gap: float, *pieces: bytes) -> list[tuple[float, bytes]]:
    return [(index * gap, piece) for index, piece in enumerate(pieces)]


# The recording: complete whatever the timing ---------------------------------------------------------


@pytest.mark.parametrize("pause", [0.0, 0.05, 0.2, 0.99, 1.5, 30.0])
def test_a_private_key_paused_after_its_first_bytes_is_never_recorded(pause: float) -> None:
    """`head -c 15 key.pem | tr -d '\\n'; sleep 0.2; tail -c +16 key.pem`: the first bytes were released
    after the idle timeout and the rest no longer matched. The recording now waits for the rest."""
    run = Run().feed(apart(pause, KEY_PEM[:15], KEY_PEM[15:]))
    assert run.recording == b"[masked:private-key]\n"
    assert all(line not in run.recording for line in KEY_BODY)


@settings(max_examples=150, deadline=None)
@given(
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
    gaps=st.lists(st.sampled_from([0.0, 0.001, 0.019, 0.021, 0.3, 0.999, 1.001, 4.0]), min_size=13, max_size=13),
)
def test_the_recording_is_the_whole_output_masked_whatever_the_timing(cuts: list[int], gaps: list[float]) -> None:
    text = b"$ cat env\nAWS=AKIAIOSFODNN7EXAMPLE mail jane.doe@example.org\npassword=hunter2\n" + KEY_PEM
    text += b"token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U\n"
    points = sorted({0, *(cut % len(text) for cut in cuts), len(text)})
    pieces, when = [], 0.0
    for index, (start, end) in enumerate(itertools.pairwise(points)):
        pieces.append((when, text[start:end]))
        when += gaps[index]
    run = Run().feed(pieces)
    assert run.recording == MASKER.mask(text)[0]


def test_the_recording_masks_too_much_rather_than_release_at_its_hold_limit() -> None:
    """A possible secret padded with escape sequences past the hold limit: masked whole, not let out."""
    colours = b"\x1b[31m\x1b[0m" * (HELD_LIMIT // 9)
    run = Run().feed([(0.0, b"id AKIAIOSF" + colours), (0.001, b"ODNN7EXAMPLE\n")])
    assert b"AKIAIOSF" not in run.recording and b"AKIAIOSF" not in run.client
    assert b"[masked:overflow]" in run.recording and run.recording.count(b"\x1b[31m") == HELD_LIMIT // 9


def test_counts_are_the_recordings_only() -> None:
    """An early release to the client masks what it holds too, but only what the recording masked counts."""
    run = Run().feed(apart(2.0, b"password=hun", b"ter2\n"))
    assert run.output.counts() == {"password": 1}
    assert run.recording == b"password=[masked:password]\n"


# The client: fast, and masked in the normal course of work -----------------------------------------


def test_typed_echo_is_shown_at_once() -> None:
    """A word being typed could start an email or a URL: the client sees it at the end of the turn,
    the recording once the next key decides it."""
    run = Run().feed(apart(0.15, b"$ echo hello", b" ", b"world\r\n"))
    assert run.client_at()[:2] == [(0.0, b"$ echo hello"), (0.15, b" ")]
    assert (0.0, b"$ echo ") in run.recorded and (0.15, b"hello ") in run.recorded
    assert run.client == run.recording == b"$ echo hello world\r\n"


def test_a_strong_prefix_waits_up_to_strong_hold() -> None:
    run = Run().feed([(0.0, b"$ echo AKIA")])
    assert run.client_at() == [(0.0, b"$ echo "), (pytest.approx(1.0), b"AKIA")]


@pytest.mark.parametrize("pause", [0.05, 0.2, 0.5, 0.99])
def test_a_private_key_paused_within_strong_hold_is_masked_for_the_client_too(pause: float) -> None:
    run = Run().feed(apart(pause, KEY_PEM[:15], KEY_PEM[15:]))
    assert run.client == b"[masked:private-key]\n"


@pytest.mark.parametrize(
    "first, rest",
    [
        (b"id AKIAIOSF", b"ODNN7EXAMPLE\n"),
        (b"t eyJhbGciOiJIUzI1NiJ9.eyJz", b"dWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U\n"),
        (b"DB_PASSWORD=", b"hunter2-and-more\n"),
        (b"curl https://admin:", b"s3cret-pass@db.example.com/\n"),
        (b"Authorization: Bearer ", b"abcdefghijklmnopqrstuvwxyz012345\n"),
    ],
)
def test_a_secret_after_its_strong_prefix_arrives_within_strong_hold_is_masked(first: bytes, rest: bytes) -> None:
    run = Run().feed(apart(0.6, first, rest))
    assert run.client == run.recording == MASKER.mask(first + rest)[0]
    assert b"[masked:" in run.client


def test_a_secret_completing_a_weak_start_shown_early_is_masked_from_there_on() -> None:
    """The client was shown `jane.doe` at once; when `@example.org` comes it sees the replacement, and
    the recording has the whole address masked."""
    run = Run().feed(apart(0.5, b"mail jane.doe", b"@example.org\n"))
    assert run.client == b"mail jane.doe[masked:email]\n"
    assert run.recording == b"mail [masked:email]\n"


def test_a_labelled_value_typed_slowly_never_shows_on_the_client() -> None:
    keys = [b"password=", *(bytes([key]) for key in b"hunter2"), b"\r\n"]
    run = Run().feed(apart(0.3, *keys))
    assert run.client == b"password=[masked:password]\r\n"
    assert run.recording == b"password=[masked:password]\r\n"


def test_idle_release_delays_weak_bytes_for_the_client() -> None:
    run = Run(idle_release=0.02).feed([(0.0, b"$ echo hello")])
    assert run.client_at() == [(0.0, b"$ echo "), (pytest.approx(0.02), b"hello")]


@pytest.mark.parametrize("packets_before", range(5, 25))
def test_a_secret_split_between_packets_of_a_steady_stream_is_masked(packets_before: int) -> None:
    """Packets 2 ms apart, each ending mid-word: something is held after every packet, and the key that
    the next packet completes is masked on both paths, whichever packet it falls on."""
    pieces = [LINE + b"%d user" % i for i in range(packets_before)]
    pieces[-1] += b" key AKIAIOSF"
    pieces.append(b"ODNN7EXAMPLE ok\n")
    run = Run().feed(apart(0.002, *pieces))
    for path in (run.client, run.recording):
        assert b"IOSF" not in path and path.endswith(b" key [masked:aws-key] ok\n")


def test_a_strong_hold_kept_open_by_a_trickle_is_shown_after_strong_hold() -> None:
    """A secret-like run that keeps coming, a byte every 5 ms: the client is shown it after
    `strong_hold`, not when it ends; the recording waits for the end."""
    pieces = [b"token eyJhbGciOiJIUzI1NiJ9.eyJ"] + [b"a"] * 80
    run = Run(strong_hold=0.15).feed(apart(0.005, *pieces), quiet=0.1)
    first_shown = next(when for when, data in run.shown if b"eyJ" in data or b"[masked:" in data)
    assert first_shown == pytest.approx(0.15)
    assert run.recorded[-1][0] == pytest.approx(80 * 0.005 + 0.1)  # at EOF


def test_pieces_of_one_turn_are_masked_together_and_counted_once() -> None:
    """Pieces that arrive in one turn of the loop are one feed (a key split between them is masked), and
    the counts of both streams are summed when asked."""
    clock = ManualClock()
    sent: list[tuple[bytes, bool]] = []
    recorded: list[tuple[bytes, bool]] = []
    output = MaskedOutput(
        MASKER, clock, show=lambda data, err: sent.append((data, err)), record=lambda d, e: recorded.append((d, e))
    )
    output.feed(b"id AKIAIOSF", False)
    output.feed(b"ODNN7EXAMPLE\n", False)
    output.feed(b"mail bob@example.org\n", True)
    assert sent == []  # nothing before the end of the turn
    clock.end_turn()
    assert sent == recorded == [(b"id [masked:aws-key]\n", False), (b"mail [masked:email]\n", True)]
    assert output.counts() == {"aws-key": 1, "email": 1}


def test_masked_output_in_order_per_stream_with_eof_last_and_echo_at_once() -> None:
    masker = MASKER
    secret_lines = b"".join(b"line %d key AKIAIOSFODNN7EXAMPLE mail jane@example.org\n" % i for i in range(3000))
    noise = bytes(32 + b % 95 for b in random.Random(7).randbytes(50_000))  # printable noise
    turns = [  # the pieces of one turn of the event loop are masked together
        [(b"echo ", False)],
        [(b"AKIA", False), (b"warn: AKIA", True), (b"IOSFODNN7EXAMPLE\n", False)],
        [(secret_lines, False), (b"IOSFODNN7EXAMPLE\n", True)],
        [(noise, False)],
        [(b"tail\n", False)],
    ]
    events: list[tuple[bytes, bool] | str] = []
    records: list[tuple[bytes, bool] | str] = []
    clock = ManualClock()
    out = MaskedOutput(
        masker, clock, show=lambda data, err: events.append((data, err)), record=lambda d, e: records.append((d, e))
    )
    out.feed(b"ls -l\r\n", False)
    clock.end_turn()
    assert events == records == [(b"ls -l\r\n", False)]  # interactive echo: at the end of the turn, no timer
    events.clear()
    records.clear()
    for pieces in turns:
        for data, stderr in pieces:
            out.feed(data, stderr)
        clock.end_turn()
    out.feed(b"last words", False)  # not masked yet when EOF comes: EOF still waits for it
    out.after(lambda: (events.append("EOF"), records.append("EOF")))

    assert events[-1] == records[-1] == "EOF"
    expected: dict[str, int] = {}
    for stderr in (False, True):
        sent = b"".join(data for turn in turns for data, err in turn if err == stderr)
        sent += b"last words" if not stderr else b""
        masked, stream_counts = masker.mask(sent)
        for path in (events, records):
            assert b"".join(e[0] for e in path if isinstance(e, tuple) and e[1] == stderr) == masked
        for name, count in stream_counts.items():
            expected[name] = expected.get(name, 0) + count
    assert out.counts() == expected and expected["aws-key"] == 3002


def test_a_short_option_is_no_strong_prefix() -> None:
    """`-u ` anchors curl's user:password detector but starts most of what follows it: shown at once."""
    run = Run().feed([(0.0, b"$ curl -u ")])
    assert run.client_at() == [(0.0, b"$ curl -u ")]
