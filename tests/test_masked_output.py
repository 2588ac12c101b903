"""A session's masked output over time: held bytes wait for a pause in the output, not for a clock.

Time is the test's own (`ManualClock`): pieces arrive at chosen instants, timers fire when the clock
passes them, and nothing sleeps.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable

import pytest

from bastion.masking.config import MaskingSettings
from bastion.masking.masker import Masker
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


def stream(pieces: list[bytes], gap: float, most_held: float = 1.0) -> list[tuple[float, bytes]]:
    """Feeds the pieces `gap` seconds apart, then 0.1 s of quiet; returns (time sent, bytes) as released."""
    clock = ManualClock()
    sent: list[tuple[float, bytes]] = []
    output = MaskedOutput(MASKER, 0.02, lambda data, _: sent.append((clock.now, data)), clock, most_held)
    for index, piece in enumerate(pieces):
        clock.advance_to(index * gap)
        output.feed(piece, False)
    clock.advance_to((len(pieces) - 1) * gap + 0.1)
    output.flush()
    return sent


@pytest.mark.parametrize("packets_before", range(5, 25))
def test_a_secret_split_between_packets_of_a_steady_stream_is_masked(packets_before: int) -> None:
    """Packets 2 ms apart, each ending mid-word: every 20 ms something is held, and no flush may cut the
    key that the next packet completes, whichever packet it falls on."""
    pieces = [LINE + b"%d user" % i for i in range(packets_before)]
    pieces[-1] += b" key AKIAIOSF"
    pieces.append(b"ODNN7EXAMPLE ok\n")
    shown = b"".join(data for _, data in stream(pieces, 0.002))
    assert b"IOSF" not in shown and shown.endswith(b" key [masked:aws-key] ok\n")


def test_what_is_held_is_released_once_the_output_pauses() -> None:
    sent = stream([b"$ echo AKIA"], 0.0)
    assert sent[0] == (0.0, b"$ echo ")  # at once: it cannot start a secret
    assert sent[1] == (pytest.approx(0.02), b"AKIA")  # after idle_release (20 ms) of quiet, not before


def test_a_secret_completed_before_the_pause_is_masked() -> None:
    """The rest of the key arrives 19 ms later, inside idle_release: nothing was released in between."""
    sent = stream([b"$ echo AKIAIOSF", b"ODNN7EXAMPLE\n"], 0.019)
    assert [data for _, data in sent] == [b"$ echo ", b"[masked:aws-key]\n"]


def test_a_hold_kept_open_by_a_trickle_is_released_after_most_held() -> None:
    """A secret-like run that keeps coming, a byte every 5 ms, never pauses: it is released after
    `most_held`, not held until it ends."""
    pieces = [b"token eyJhbGciOiJIUzI1NiJ9.eyJ"] + [b"a"] * 80
    sent = stream(pieces, 0.005, most_held=0.15)
    first_held_release = next(when for when, data in sent if b"eyJ" in data)
    assert first_held_release == pytest.approx(0.15)


@pytest.mark.parametrize("run", range(4))
def test_steady_output_longer_than_most_held_is_not_flushed_mid_secret(run: int) -> None:
    """Most packets end in a few held bytes, each time new ones: only a byte held `most_held` long is
    forced out, so a key split between two packets 15 ms apart in a steady stream is masked, also when
    it comes `most_held` after the stream began."""
    clock = ManualClock()
    sent: list[bytes] = []
    output = MaskedOutput(MASKER, 0.02, lambda data, _: sent.append(data), clock, most_held=0.2)
    for i in range(36 + run):  # 0.18-0.2 s at 5 ms: the split falls where a clock started at the first
        # hold would force a flush (most_held, 0.2 s)
        clock.advance_to(i * 0.005)
        output.feed(LINE + b"%d user" % i, False)
    clock.advance_to(clock.now + 0.005)
    output.feed(b" key AKIAIOSF", False)
    clock.advance_to(clock.now + 0.015)
    output.feed(b"ODNN7EXAMPLE ok\n", False)
    clock.advance_to(clock.now + 0.05)
    output.flush()
    shown = b"".join(sent)
    assert b"IOSF" not in shown and shown.endswith(b" key [masked:aws-key] ok\n")


def test_pieces_of_one_turn_are_masked_together_and_counted_once() -> None:
    """Pieces that arrive in one turn of the loop are one feed (a key split between them is masked), and
    the counts of both streams are summed when asked."""
    clock = ManualClock()
    sent: list[tuple[bytes, bool]] = []
    output = MaskedOutput(MASKER, 0.02, lambda data, err: sent.append((data, err)), clock)
    output.feed(b"id AKIAIOSF", False)
    output.feed(b"ODNN7EXAMPLE\n", False)
    output.feed(b"mail bob@example.org\n", True)
    assert sent == []  # nothing before the end of the turn
    clock.end_turn()
    assert sent == [(b"id [masked:aws-key]\n", False), (b"mail [masked:email]\n", True)]
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
    clock = ManualClock()
    out = MaskedOutput(masker, 0.02, lambda data, stderr: events.append((data, stderr)), clock)
    out.feed(b"ls -l\r\n", False)
    clock.end_turn()
    assert events == [(b"ls -l\r\n", False)]  # interactive echo: released at the end of the turn, no timer
    events.clear()
    for pieces in turns:
        for data, stderr in pieces:
            out.feed(data, stderr)
        clock.end_turn()
    out.feed(b"last words", False)  # not masked yet when EOF comes: EOF still waits for it
    out.after(lambda: events.append("EOF"))

    assert events[-1] == "EOF"
    expected: dict[str, int] = {}
    for stderr in (False, True):
        sent = b"".join(data for turn in turns for data, err in turn if err == stderr)
        sent += b"last words" if not stderr else b""
        got = b"".join(e[0] for e in events if isinstance(e, tuple) and e[1] == stderr)
        masked, stream_counts = masker.mask(sent)
        assert got == masked
        for name, count in stream_counts.items():
            expected[name] = expected.get(name, 0) + count
    assert out.counts() == expected and expected["aws-key"] == 3002
