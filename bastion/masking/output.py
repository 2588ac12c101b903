"""A session's output through the masker: stdout and stderr each one stream, on two paths.

**The recording is complete.** It gets only what the masker has decided: held bytes (those that could
still start a secret) leave when later output decides them, or at EOF, never because of a pause. So
the recording never holds a secret that the masker recognises in the stream as a whole, whatever the
timing of its pieces.

**The client is fast.** Held bytes are shown to it early, masked as if the output ended there
(`MaskingStream.show_early`): at once, at the end of the event loop's turn (or after `idle_release` of
quiet, if set), unless they complete a strong prefix (`hold.py`: `-----BEGIN`, `AKIA`, `eyJ`,
`password=`, ...), which waits until later output decides it, up to `strong_hold` (1 s) after it was
first held. What the client was shown is not shown again; if later output completes a secret it started,
the client sees the rest as the replacement. So typed echo is not delayed, and a secret shown in the
normal course of work reaches the client masked even when its strong prefix comes a second before
the rest; a user who slices output on purpose can defeat the client path, never the recording.

Pieces that arrive in one turn of the event loop are masked together, at the end of that turn: one
socket read holds several SSH packets, and the masker's cost is mostly per call, not per byte. Nothing
waits for a later turn. Masking runs on the event loop itself: handing bulk output to a worker thread
was measured slower (bench/throughput, docs/design/0006-masking.md), since every hand-over costs more
than masking a piece takes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from bastion.masking.masker import Masker, Released

Emit = Callable[[bytes, bool], None]  # (masked bytes, is stderr)
STRONG_HOLD = 1.0  # seconds the client may wait for a strong prefix to be decided
_EARLY = 0.001  # a timer may fire up to the clock's resolution early


class Timer(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """The clock and the timers MaskedOutput runs on: the session's asyncio event loop, or a test's own clock."""

    def time(self) -> float: ...

    def call_soon(self, callback: Callable[[], None]) -> object: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer: ...

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer: ...


class MaskedOutput:
    """Masks one session's stdout and stderr: `record` gets what is decided, `show` what the client sees."""

    def __init__(
        self,
        masker: Masker,
        scheduler: Scheduler,
        show: Emit,
        record: Emit,
        idle_release: float = 0.0,
        strong_hold: float = STRONG_HOLD,
    ) -> None:
        self._scheduler = scheduler
        self._streams = (masker.stream(), masker.stream())  # stdout, stderr
        self._show = show
        self._record = record
        self._idle_release = idle_release
        self._strong_hold = strong_hold
        self._last_output = 0.0  # loop time of the last output masked
        self._fed = [0, 0]  # bytes fed to each stream so far
        self._oldest = [0, 0]  # offset in each stream of its oldest byte the client has not been shown ...
        self._waiting_since: list[float | None] = [None, None]  # ... and since when it has waited
        self._timer: Timer | None = None
        self._due = 0.0  # when the timer fires
        self._pending: list[tuple[bytes, bool]] = []  # pieces of this turn of the loop, in order

    def feed(self, data: bytes, stderr: bool) -> None:
        if not self._pending:
            self._scheduler.call_soon(self.drain)
        self._pending.append((data, stderr))

    def after(self, then: Callable[[], None]) -> None:
        """Release everything held, then `then()` (EOF, exit): after all output that came before it."""
        self.flush()
        then()

    def flush(self) -> None:
        """Release everything held, to both paths (EOF, end of session)."""
        self.drain()
        self._cancel_timer()
        self._waiting_since = [None, None]
        for stderr, stream in enumerate(self._streams):
            self._emit(stream.release_all(), bool(stderr))

    def drain(self) -> None:
        """Mask and send what this turn brought so far: at the end of the turn, and before a line of the
        bastion's own or a flush."""
        pending, self._pending = self._pending, []
        start = 0
        while start < len(pending):
            stderr = pending[start][1]
            end = start + 1
            while end < len(pending) and pending[end][1] == stderr:
                end += 1
            data = pending[start][0] if end == start + 1 else b"".join(data for data, _ in pending[start:end])
            start = end
            self._fed[stderr] += len(data)
            self._emit(self._streams[stderr].release(data), stderr)
        if pending:
            self._last_output = self._scheduler.time()
            self._show_due()

    def _emit(self, released: Released, stderr: bool) -> None:
        if released.recorded:
            self._record(released.recorded, stderr)
        if released.shown:
            self._show(released.shown, stderr)

    def _show_due(self) -> None:
        """Shows the client the held bytes whose wait is over; sets the timer for the others."""
        now = self._scheduler.time()
        due: float | None = None
        for index, stream in enumerate(self._streams):
            if not stream.unshown:
                self._waiting_since[index] = None
                continue
            oldest = self._fed[index] - stream.unshown  # what waits is always the end of what was fed
            waiting_since = self._waiting_since[index]
            if waiting_since is None or oldest != self._oldest[index]:
                self._oldest[index], self._waiting_since[index] = oldest, now
                waiting_since = now
            strong = stream.strong()
            when = waiting_since + self._strong_hold if strong else self._last_output + self._idle_release
            if when - now <= _EARLY:
                self._waiting_since[index] = None
                shown = stream.show_early()
                if shown:
                    self._show(shown, bool(index))
            else:
                due = when if due is None else min(due, when)
        if due is None:
            self._cancel_timer()
        elif self._timer is None or due < self._due:
            self._cancel_timer()
            self._due = due
            self._timer = self._scheduler.call_at(due, self._when_due)

    def _when_due(self) -> None:
        self._timer = None
        self._show_due()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def counts(self) -> dict[str, int]:
        """Maskings of each kind so far, stdout and stderr together (asked once, when the session ends)."""
        stdout, stderr = (stream.counts for stream in self._streams)
        return dict(sorted({name: stdout.get(name, 0) + stderr.get(name, 0) for name in {*stdout, *stderr}}.items()))
