"""A session's output through the masker: stdout and stderr each one stream, held bytes released when idle.

The masker holds back only bytes that could still be the start of a secret. They are released as soon
as later output decides them, or `idle_release` (20 ms) after they started waiting, whichever comes
first: the timer starts when something is first held and is not pushed back by more output, so no byte
waits longer than that.

Small pieces (interactive echo) are masked inline. Bulk output (OFFLOAD_MIN bytes and more) is masked
in a worker thread, in order, so that the regex scan (google-re2 releases the GIL) runs beside the event
loop instead of on it; while a piece is in the worker, later pieces queue behind it and are coalesced,
and the target is paused (`hold_target`) once QUEUE_HIGH bytes wait, until they drain below QUEUE_LOW.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
from collections.abc import Callable

from bastion.masking import Masker

Emit = Callable[[bytes, bool], None]  # (masked bytes, is stderr)
OFFLOAD_MIN = 8 * 1024
COALESCE_MAX = 256 * 1024
QUEUE_HIGH, QUEUE_LOW = 1024 * 1024, 256 * 1024
MASKING_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="masking")


class MaskedOutput:
    def __init__(
        self,
        masker: Masker,
        idle_release: float,
        emit: Emit,
        counts: dict[str, int],
        hold_target: Callable[[bool], None] = lambda on: None,
    ) -> None:
        self._streams = (masker.stream(), masker.stream())  # stdout, stderr
        self._idle_release = idle_release
        self._emit = emit
        self._counts = counts  # the recording's maskings, updated in place
        self._hold_target = hold_target
        self._timer: asyncio.TimerHandle | None = None
        self._queue: collections.deque[tuple[bytes, bool] | Callable[[], None]] = collections.deque()
        self._queued = 0
        self._holding = False
        self._worker: asyncio.Task[None] | None = None

    def feed(self, data: bytes, stderr: bool) -> None:
        if self._worker is None and len(data) < OFFLOAD_MIN:
            self._released(self._streams[stderr].feed(data), stderr)
            return
        self._queue.append((data, stderr))
        self._queued += len(data)
        if self._queued > QUEUE_HIGH and not self._holding:
            self._holding = True
            self._hold_target(True)
        self._start()

    def after(self, then: Callable[[], None]) -> None:
        """Release everything held, then `then()` (EOF, exit): after all output queued before it."""
        if self._worker is None:
            self.flush()
            then()
            return
        def flush_then() -> None:
            self.flush()
            then()

        self._queue.append(flush_then)

    def flush(self) -> None:
        """Release everything held (idle timeout, EOF, end of session)."""
        if self._worker is not None:
            self._timer = None
            return  # the worker arms the timer again when it is done
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for stderr, stream in enumerate(self._streams):
            released = stream.flush()
            if released:
                self._emit(released, bool(stderr))
        self._count()

    def _released(self, released: bytes, stderr: bool) -> None:
        self._count()
        if released:
            self._emit(released, stderr)
        if self._timer is None and any(stream.held for stream in self._streams):
            self._timer = asyncio.get_running_loop().call_later(self._idle_release, self.flush)

    def _start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                item = self._queue.popleft()
                if callable(item):
                    self._worker = None  # so that flush() runs now, in order
                    item()
                    self._worker = asyncio.current_task()  # type: ignore[assignment]
                    continue
                data, stderr = item
                while self._queue and not callable(self._queue[0]) and self._queue[0][1] == stderr:
                    if len(data) >= COALESCE_MAX:
                        break
                    data += self._queue.popleft()[0]  # type: ignore[index]
                self._queued -= len(data)
                released = await loop.run_in_executor(MASKING_POOL, self._streams[stderr].feed, data)
                if self._holding and self._queued < QUEUE_LOW:
                    self._holding = False
                    self._hold_target(False)
                self._released(released, stderr)
        finally:
            self._worker = None
            if self._timer is None and any(stream.held for stream in self._streams):
                self._timer = loop.call_later(self._idle_release, self.flush)
            if self._holding:
                self._holding = False
                self._hold_target(False)

    def _count(self) -> None:
        stdout, stderr = (stream.counts for stream in self._streams)
        if (stdout or stderr) and sum(stdout.values()) + sum(stderr.values()) != sum(self._counts.values()):
            totals = {name: stdout.get(name, 0) + stderr.get(name, 0) for name in {*stdout, *stderr}}
            self._counts.clear()
            self._counts.update(sorted(totals.items()))
