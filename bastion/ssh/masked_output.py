"""A session's output through the masker: stdout and stderr each one stream, held bytes released when idle.

The masker holds back only bytes that could still be the start of a secret. They are released as soon
as later output decides them, or `idle_release` (20 ms) after they started waiting, whichever comes
first: the timer starts when something is first held and is not pushed back by more output, so no byte
waits longer than that.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from bastion.masking import Masker

Emit = Callable[[bytes, bool], None]  # (masked bytes, is stderr)


class MaskedOutput:
    def __init__(self, masker: Masker, idle_release: float, emit: Emit, counts: dict[str, int]) -> None:
        self._streams = (masker.stream(), masker.stream())  # stdout, stderr
        self._idle_release = idle_release
        self._emit = emit
        self._counts = counts  # the recording's maskings, updated in place
        self._timer: asyncio.TimerHandle | None = None

    def feed(self, data: bytes, stderr: bool) -> None:
        stream = self._streams[stderr]
        released = stream.feed(data)
        self._count()
        if released:
            self._emit(released, stderr)
        if stream.held and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._idle_release, self.flush)

    def flush(self) -> None:
        """Release everything held (idle timeout, EOF, end of session)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for stderr, stream in enumerate(self._streams):
            released = stream.flush()
            if released:
                self._emit(released, bool(stderr))
        self._count()

    def _count(self) -> None:
        stdout, stderr = (stream.counts for stream in self._streams)
        if stdout or stderr:
            totals = {name: stdout.get(name, 0) + stderr.get(name, 0) for name in {*stdout, *stderr}}
            self._counts.clear()
            self._counts.update(sorted(totals.items()))
