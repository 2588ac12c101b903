"""Keystroke echo through ssh: one interactive shell on the target, under a pseudo-terminal of ours.

The real `ssh -tt` client runs with its stdin, stdout and stderr on the slave side of a pty made here
(its controlling terminal), left in the kernel's default modes, as a user's terminal is: ssh sends those
modes to the target's pty (echo on), then puts ours in raw mode, so nothing is echoed locally. On the target,
sshd gives the shell a pty of its own, and the shell is an interactive bash with readline: it is
readline that echoes each printable key, as one byte, the same byte. A keystroke is timed from
os.write of the key on the pty master to the os.read that returns its echo (time.perf_counter_ns,
poll on the master).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import struct
import subprocess
import termios
import time

from . import BenchError
from .processes import stop_group

# bash without startup files, history off, and a prompt that nothing else prints: PS1 has no blank in it
# (`\040` is bash's octal escape for the space), so the bastion takes the command for a shell and gates
# its lines as it does a login shell's.
PROMPT = b"[bench-latency]$ "
SHELL_COMMAND = r"exec env PS1='[bench-latency]\$\040' HISTFILE=/dev/null bash --norc --noprofile -i"
CLEARED = b"\x1b[K"  # readline ends its redraw after Ctrl-U (backspaces, then erase to end of line) with it
CTRL_U, CTRL_D = b"\x15", b"\x04"
COLUMNS, ROWS = 120, 40


class EchoSession:
    """One `ssh -tt ... bash` under a pty of ours: type a key, time its echo."""

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        self.argv = argv
        self.master = -1
        self.proc: subprocess.Popen[bytes] | None = None
        self.seen = bytearray()  # the latest output, for error messages
        self.line = 0  # characters typed on the current line

    def start(self, timeout: float) -> None:
        """Start ssh and wait for the shell's prompt."""
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        env = {**os.environ, "TERM": "xterm-256color", "LC_ALL": "C"}
        self.master = master
        try:
            self.proc = subprocess.Popen(
                self.argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True,
                preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))  # the pty is ssh's controlling tty
        finally:
            os.close(slave)
        self.read_until(PROMPT, timeout, "the shell's prompt")
        if termios.tcgetattr(master)[3] & (termios.ECHO | termios.ICANON):  # the slave's modes, read on the master
            raise BenchError(f"{self.name}: ssh left the local pty in cooked mode: an echo could be local")

    def _read(self, deadline: float, what: str) -> bytes:
        """The next output from the master, waiting until deadline (time.monotonic)."""
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([self.master], [], [], left)[0]:
            raise BenchError(f"{self.name}: {what} did not come within the timeout; "
                             f"last output {bytes(self.seen[-120:])!r}")
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: every process on the slave side has gone
            data = b""
        if not data:
            status = self.proc.poll() if self.proc is not None else None
            raise BenchError(f"{self.name}: the session ended (ssh exit {status}) while waiting for {what}; "
                             f"last output {bytes(self.seen[-120:])!r}")
        self.seen[:] = (self.seen + data)[-4096:]
        return data

    def read_until(self, marker: bytes, timeout: float, what: str) -> bytes:
        """Read until the output so far ends with marker (or holds it); return what was read."""
        deadline = time.monotonic() + timeout
        out = b""
        while marker not in out:
            out += self._read(deadline, what)
        return out

    def key(self, char: bytes, timeout: float) -> tuple[int, bool]:
        """Type one printable character; return (nanoseconds until its echo was read, whether the read
        that brought it held other bytes too)."""
        self.drain()
        deadline = time.monotonic() + timeout
        start = time.perf_counter_ns()
        os.write(self.master, char)
        out = b""
        while char not in out:
            out += self._read(deadline, f"echo of {char!r}")
        elapsed = time.perf_counter_ns() - start
        self.line += 1
        return elapsed, out != char

    def drain(self) -> bytes:
        """Whatever output is waiting now, without waiting for more."""
        out = b""
        while select.select([self.master], [], [], 0)[0]:
            out += self._read(time.monotonic() + 1, "output")
        return out

    def clear_line(self, timeout: float) -> None:
        """Ctrl-U, then wait until readline has redrawn the emptied line."""
        if self.line:
            os.write(self.master, CTRL_U)
            self.read_until(CLEARED, timeout, "the line cleared after Ctrl-U")
            self.line = 0

    def close(self) -> None:
        """Leave the shell (Ctrl-U, Ctrl-D), then make sure ssh has gone."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(OSError):
                os.write(self.master, CTRL_U + CTRL_D)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                stop_group(self.proc, timeout=5)
        if self.master >= 0:
            os.close(self.master)
            self.master = -1
