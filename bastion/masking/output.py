"""A session's output through the masker: stdout and stderr each one stream, held bytes released when idle.

The masker holds back only bytes that could still be the start of a secret. They are released as soon
as later output decides them, or once the output has been quiet for `idle_release` (20 ms). Output that
keeps coming does not release them early: a flush in the middle of a stream would show the start of a
secret that the next packet completes. Only a byte that stays held for `MOST_HELD` (a second) while
output never pauses (a secret-like run trickling out slowly) is released then; most packets end in a
few held bytes, but those are new ones each time, and their clock starts afresh.

Pieces that arrive in one turn of the event loop are masked together, at the end of that turn: one
socket read holds several SSH packets, and the masker's cost is mostly per call, not per byte. Nothing
waits for a later turn. Masking runs on the event loop itself: handing bulk output to a worker thread
was measured slower (bench/throughput, docs/design/0006-masking.md), since every hand-over costs more
than masking a piece takes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from bastion.masking.masker import Masker

Emit = Callable[[bytes, bool], None]  # (masked bytes, is stderr)
MOST_HELD = 1.0  # seconds a byte may be held while output keeps coming without a pause


class Timer(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """The clock and the timers MaskedOutput runs on: the session's asyncio event loop, or a test's own clock."""

    def time(self) -> float: ...

    def call_soon(self, callback: Callable[[], None]) -> object: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer: ...

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer: ...


class MaskedOutput:
    """Masks one session's stdout and stderr for the client and the recording; `emit` gets what is released."""

    def __init__(
        self, masker: Masker, idle_release: float, emit: Emit, scheduler: Scheduler, most_held: float = MOST_HELD
    ) -> None:
        self._scheduler = scheduler
        self._streams = (masker.stream(), masker.stream())  # stdout, stderr
        self._idle_release = idle_release
        self._most_held = most_held
        self._last_output = 0.0  # loop time of the last output masked
        self._fed = [0, 0]  # bytes fed to each stream so far
        self._oldest = [0, 0]  # offset in each stream of its oldest held byte ...
        self._held_at: list[float | None] = [None, None]  # ... and since when it has been held
        self._emit = emit
        self._timer: Timer | None = None
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
        """Release everything held (idle timeout, EOF, end of session)."""
        self.drain()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._held_at = [None, None]
        for stderr, stream in enumerate(self._streams):
            released = stream.flush()
            if released:
                self._emit(released, bool(stderr))

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
            released = self._streams[stderr].feed(data)
            if released:
                self._emit(released, stderr)
        if not pending:
            return
        now = self._last_output = self._scheduler.time()
        for index, stream in enumerate(self._streams):
            oldest = self._fed[index] - stream.held  # what is held is always the end of what was fed
            if not stream.held:
                self._held_at[index] = None
            elif self._held_at[index] is None or oldest != self._oldest[index]:
                self._oldest[index], self._held_at[index] = oldest, now
        if self._held_at == [None, None]:
            return
        if self._timer is None:
            self._timer = self._scheduler.call_later(self._idle_release, self._when_idle)

    def _when_idle(self) -> None:
        """Flush once output has been quiet for `idle_release`, or something has been held too long."""
        self._timer = None
        held_since = min((when for when in self._held_at if when is not None), default=None)
        if held_since is None:
            return
        due = min(self._last_output + self._idle_release, held_since + self._most_held)
        if due - self._scheduler.time() > 0.001:  # (a timer may fire up to the clock's resolution early)
            self._timer = self._scheduler.call_at(due, self._when_idle)
        else:
            self.flush()

    def counts(self) -> dict[str, int]:
        """Maskings of each kind so far, stdout and stderr together (asked once, when the session ends)."""
        stdout, stderr = (stream.counts for stream in self._streams)
        return dict(sorted({name: stdout.get(name, 0) + stderr.get(name, 0) for name in {*stdout, *stderr}}.items()))
