"""Gating the lines typed in an interactive shell: hold each Enter, decide the line the screen shows,
then send the Enter on, or clear the line on the target (Ctrl-C) and tell the user why.

Before deciding, the echo of what was typed must be on the screen (output quiet for ECHO_QUIET, at
most ECHO_WAIT). Afterwards, keys typed ahead are held until the shell reads its next line, a
full-screen program starts, or the output is quiet (a program reading input), RELEASE_WAIT at most:
not longer, or they would reach a program late. A guardrail, not a boundary (docs/design/0005-control.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from bastion.control.actions import ShellLine
from bastion.control.command_line import SHELLS
from bastion.control.gate import Gate
from bastion.shell.tracker import CLEAR_LINE, ShellLineTracker

ECHO_QUIET, ECHO_WAIT = 0.04, 1.0
SHOWN_WAIT = 2.0  # the most the Enter waits for keys typed on the line to show (after ECHO_WAIT)


def runs_a_shell(command: str) -> bool:
    """`bash`, `/bin/sh -l`, `exec zsh`: an exec that starts an interactive shell (no -c, no script)."""
    words = command.split()
    while (words and words[0] in ("exec", "env", "command")) or (words and "=" in words[0]):
        words = words[1:]
    if not words or words[0].rsplit("/", 1)[-1] not in SHELLS:
        return False
    return not any(w == "-c" or (w.startswith("-") and not w.startswith("--") and "c" in w) for w in words[1:]) and all(
        w.startswith("-") for w in words[1:]
    )


RELEASE_QUIET, RELEASE_WAIT = 0.1, 2.0


class ShellLines:
    def __init__(self, tracker: ShellLineTracker, gate: Gate, say: Callable[[str], None]) -> None:
        self.tracker = tracker
        self.gate = gate
        self.say = say  # one line from the bastion on the user's screen
        self.holding = False  # an Enter is held while its line is decided
        self.held: list[bytes] = []  # client input that arrived meanwhile
        self.last_output = 0.0
        self.task: asyncio.Future[None] | None = None
        self.closed = False

    def output(self, data: bytes) -> None:
        """What the shell wrote (raw, before masking: the line is decided on what the shell has) and the
        bastion's own lines."""
        self.tracker.output(data)
        self.last_output = asyncio.get_running_loop().time()

    def typed(self, data: bytes, target: Any) -> None:
        """Client input: forwarded up to an Enter that needs a decision, which is then held."""
        if self.holding:
            self.held.append(data)
            return
        while data:
            before, enter, data = self.tracker.split_at_enter(data)
            if before:
                target.write(before)
            if enter is None:
                return
            if not self.tracker.gating:
                target.write(enter)
                self.tracker.submitted()
                continue
            self.holding = True
            self.held.insert(0, data)
            self.task = asyncio.ensure_future(self._decide(enter, target))
            return

    def close(self) -> None:
        self.closed = True
        if self.task is not None and not self.task.done():
            self.task.cancel()

    async def _decide(self, enter: bytes, target: Any) -> None:
        try:
            await self._decide_line(enter, target)
        finally:
            self.holding = False  # whatever happened, input is not frozen
        held, self.held = self.held, []
        for data in held:
            if not self.closed:
                self.typed(data, target)

    async def _decide_line(self, enter: bytes, target: Any) -> None:
        tracker, loop = self.tracker, asyncio.get_running_loop()
        deadline = loop.time() + ECHO_WAIT
        while loop.time() < deadline and (tracker.awaiting_echo or loop.time() - self.last_output < ECHO_QUIET):
            await asyncio.sleep(0.01)
        deadline = loop.time() + SHOWN_WAIT  # keys typed after a Tab wait for a completion function to end
        while loop.time() < deadline and tracker.shows_what_was_typed() is False:
            await asyncio.sleep(0.01)
        text = tracker.line()
        allowed = True
        if tracker.shows_what_was_typed() is False or (not text.strip() and tracker.awaiting_echo):
            # keys were typed that the screen does not show: what would run is not what can be read: fail closed
            allowed = False
            reason = "the line typed is not all on the screen yet (echo off, or a completion still running)"
            self.gate.refuse(ShellLine(text), f"denied: {reason}, so it cannot be checked; it was not run")
            self.say(f"denied: {reason}, so it cannot be checked; it was not run")
        elif text.strip():
            verdict = await self.gate.check(ShellLine(text), self.say)
            allowed = verdict.allowed
            if not allowed:
                self.say(verdict.message)
        if self.closed:
            return
        if allowed:
            target.write(enter)
            tracker.submitted()
        else:
            target.write(CLEAR_LINE)
            tracker.cleared()
        reads, sent = tracker.line_reads, loop.time()
        deadline = sent + RELEASE_WAIT
        while loop.time() < deadline and tracker.line_reads == reads and not tracker.full_screen:
            if loop.time() - max(self.last_output, sent) > RELEASE_QUIET:
                break
            await asyncio.sleep(0.01)


class PipedLines:
    """A shell without a pty (`ssh -T host < script`, `ssh host bash`): each line of its input is decided
    before the shell reads it; a denied line is dropped and reported on stderr."""

    def __init__(self, gate: Gate, tell: Callable[[str], None]) -> None:
        self.gate = gate
        self.tell = tell
        self.pending = b""
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.task: asyncio.Future[None] | None = None

    def typed(self, data: bytes, target: Any) -> None:
        self.pending += data
        *lines, self.pending = self.pending.split(b"\n")
        for line in lines:
            self.queue.put_nowait(line + b"\n")
        self._start(target)

    def eof(self, target: Any) -> None:
        if self.pending:
            self.queue.put_nowait(self.pending)
            self.pending = b""
        self.queue.put_nowait(None)
        self._start(target)

    def close(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def _start(self, target: Any) -> None:
        if self.task is None:
            self.task = asyncio.ensure_future(self._run(target))

    async def _run(self, target: Any) -> None:
        while (line := await self.queue.get()) is not None:
            text = line.decode(errors="replace").strip()
            if text and not text.startswith("#"):
                verdict = await self.gate.check(ShellLine(text), self.tell)
                if not verdict.allowed:
                    self.tell(verdict.message)
                    continue
            target.write(line)
        target.write_eof()
