"""Reconstructs the command line a shell is about to run, as the terminal screen shows it at Enter.

Pure: target output and client keys in; the line, and whether an Enter is to be gated, out. How a
session drives it is in `ShellLineTracker`'s docstring.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

import pyte

from bastion.shell.keys import CLEAR_LINE, PASTE_END, PASTE_START, KeyScanner
from bastion.shell.screen import Screen, ScreenListener, cells

__all__ = ["CLEAR_LINE", "ShellLineTracker", "unfinished"]

# Private modes that change what the screen shows or how, and a full reset: never skipped as bulk.
MODE_SWITCH = re.compile(rb"\x1b\[\?(?:[0-9]*;)*(?:2004|1049|1047|47|[3567])(?:;[0-9]*)*[hl]|\x1bc")
BULK = 8192  # bytes of output, read by no line, from which only the last screenful is emulated
# Keys after which readline may draw the prompt again lower down: completion listings (Tab,
# M-?, M-=), clear-screen (C-l), C-x prefixed commands: ESC not starting an arrow key's sequence.
REDRAW_KEYS = re.compile(rb"[\t\x0c\x18]|\x1b(?![\[O])")
DEFAULT_CONTINUATION_PROMPT = "> "  # bash's PS2
ISEARCH = re.compile(r"^\((?:failed )?(?:reverse-)?i-search\)`.*?': ", re.DOTALL)


def unfinished(command: str) -> bool:
    """True if a POSIX shell would ask for more: an open quote, a trailing backslash or operator.

    A fallback for when the continuation prompt is not yet known; compound commands and here
    documents are recognised only by their prompt.
    """
    code: list[str] = []
    quote = ""
    escaped = comment = False
    for index, char in enumerate(command):
        if comment:
            comment = char != "\n"
        elif escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote:
            quote = "" if char == quote[-1] else quote
        elif char in "'\"`":
            quote = "$'" if char == "'" and command[index - 1 : index] == "$" else char
        elif char == "#" and (index == 0 or command[index - 1].isspace()):
            comment = True
            continue
        if not comment:
            code.append(char)
    if quote or escaped:
        return True
    return "".join(code).rstrip().endswith(("|", "&&"))


@dataclass
class _Anchor:
    """Where the edited line begins; the screen's "anchor" mark holds its cell."""

    prompt: str  # what stood left of the line on its row, from where the line read began
    switches: int  # the screen's paste_switches when taken; the shell ending or starting a line makes it stale
    redraw: bool = False  # a key was typed that can make readline draw the prompt again


class ShellLineTracker:
    """Follows one interactive shell session and reconstructs the command line at each Enter.

    A session drives it so:

    * `output(data)`: every byte the target sends, raw (before masking: the line is decided on what
      the shell has, not on the masked view), and the bastion's own messages.
    * `split_at_enter(data)`: client input. Forward `before` at once. At an `enter`, hold it and
      queue all further input. If `gating`: wait (bounded) until not `awaiting_echo` and output
      has been quiet briefly, decide on `line()`, then either forward the Enter and call
      `submitted()`, or send `CLEAR_LINE` instead and call `cleared()`. If not gating, forward it
      and call `submitted()`. Then go on with `after` and the queued input.
    * `resize(cols, rows)` on a window change.

    Gating rule (`gating`): no in the alternate screen (full-screen programs), unless a shell
    prompts there; yes while bracketed paste is on (readline switches it on to read a command
    line and off while the command runs); yes for a shell that never switched it on (nothing
    tells its prompt from a program's input, so every line is gated); otherwise, with bracketed
    paste off, yes only at a line that follows the shell's known prompt, and no for the input of
    a running program (cat, read, a password prompt, a REPL).
    """

    def __init__(self, cols: int = 80, rows: int = 24) -> None:
        self._screen = Screen(cols, rows)
        self._stream = pyte.ByteStream(ScreenListener(self._screen))
        self._keys = KeyScanner()
        self._anchor: _Anchor | None = None
        self._pending: list[str] = []  # earlier lines of a multi-line command
        self._submitted: list[str] | None = None  # let through; continued or not, the next line tells
        self._primary_prompt: str | None = None
        self._continuation_prompt = DEFAULT_CONTINUATION_PROMPT
        self._awaiting_echo = False
        self._held: str | None = None  # the current line as line() read it for the held Enter
        self._typed_text = ""  # printable keys typed since the current line began, in order
        self._typed_plain = True  # and nothing else was typed (no edits, moves, history): the screen must show them

    # Feeding.
    def output(self, data: bytes) -> None:
        """Bytes the target sent to the client."""
        if data:
            self._awaiting_echo = False
        position = 0
        while position < len(data):
            switch = MODE_SWITCH.search(data, position)
            upto = len(data) if switch is None else switch.end()
            position = self._skip_bulk(data, position, upto if switch is None else switch.start())
            with contextlib.suppress(Exception):  # a target's output must not end the session; pyte resets its parser
                self._stream.feed(data[position:upto])
            position = upto
        self._screen.end_of_output()

    def _skip_bulk(self, data: bytes, start: int, end: int) -> int:
        """Where to start feeding data[start:end]. While the shell reads no line, output that fills
        the screen matters only for where it leaves the cursor: the screen is blanked and only the
        last lines are emulated (pyte runs at about 1 MB/s; this keeps bulk output at memory speed)."""
        screen = self._screen
        if screen.bracketed_paste or end - start < BULK:
            return start
        if data.count(b"\n", start, end) < screen.lines and end - start < 4 * screen.lines * screen.columns:
            return start  # it may not fill the screen: emulate it all
        last = data.rfind(b"\n", start, end)
        keep = data.rfind(b"\n", start, last) if last > start else -1  # the last two lines are emulated
        with contextlib.suppress(Exception):
            self._stream.feed(b"\x1b[2J\x1b[%dH" % screen.lines)
        return max(keep + 1, end - 4 * screen.columns, start)

    def split_at_enter(self, data: bytes) -> tuple[bytes, bytes | None, bytes]:
        """Split client input at its first Enter: (before, enter or None, after).

        `before` counts as typed: forward it now. Hold `enter`, and pass `after` here again once
        the Enter is decided (queue further input until then).
        """
        index = self._keys.find_enter(data, self._screen.bracketed_paste)
        before = data if index < 0 else data[:index]
        if before:
            self._typed(before)
        if index < 0:
            return data, None, b""
        self._held = None
        return before, data[index : index + 1], data[index + 1 :]

    def resize(self, cols: int, rows: int) -> None:
        self._screen.resize(lines=rows, columns=cols)
        if self._anchor is not None:
            self._anchor.redraw = True  # readline draws the line again on SIGWINCH

    # What the session asks.
    @property
    def gating(self) -> bool:
        """Whether an Enter now would have a shell run a command line (see the class's rule)."""
        screen = self._screen
        if screen.alternate:
            return screen.bracketed_paste and self._known_prompt() is not None
        if screen.bracketed_paste or not screen.paste_seen:
            return True
        prompt = self._prompt_now()
        return bool(prompt) and prompt in (self._primary_prompt, self._continuation_prompt)

    @property
    def full_screen(self) -> bool:
        """A full-screen program (vim, less, top) holds the alternate screen."""
        return self._screen.alternate

    @property
    def bracketed_paste(self) -> bool:
        """The shell asked for bracketed paste: readline is reading a command line."""
        return self._screen.bracketed_paste

    @property
    def awaiting_echo(self) -> bool:
        """Keys were forwarded and no output came since: the screen may not show them yet."""
        return self._awaiting_echo

    @property
    def line_reads(self) -> int:
        """How many times the shell started reading a line (switched bracketed paste on)."""
        return self._screen.line_reads

    def line(self) -> str:
        """The command line as the screen shows it now, prompt excluded, continuation lines joined."""
        current = self._held = self._current_line()  # first: starting a line decides what it continues
        return "\n".join([*self._pending, current])

    def shows_what_was_typed(self) -> bool | None:
        """Whether the line on the screen holds every printable key typed on it, in order (completion may add
        text between them): False means some keys are not echoed yet (a slow completion function, say), so the
        screen is not yet the line that would run. None: keys that edit the line were typed, so no telling."""
        if not self._typed_plain:
            return None
        shown = iter(self._current_line() if self._held is None else self._held)
        return all(char in shown for char in self._typed_text if char != "\t")

    def submitted(self) -> None:
        """The Enter was let through to the target (after messages the bastion wrote meanwhile)."""
        if not self.gating:  # a program's input, not a command line
            self.cleared()
            return
        current = self._current_line() if self._held is None else self._held
        self._submitted, self._held = [*self._pending, current], None
        self._forget_typed()
        if not self._screen.bracketed_paste:
            self._anchor = None  # else readline switching it off tells that the Enter took the line

    def cleared(self) -> None:
        """`CLEAR_LINE` was sent instead of the Enter: the shell drops the whole command."""
        self._forget_typed()
        self._held = None
        self._pending = []
        self._submitted = None
        self._anchor = None

    # Keystrokes.
    def _typed(self, data: bytes) -> None:
        self._awaiting_echo = True
        interrupted, self._keys.interrupted = self._keys.interrupted, False
        if interrupted and not self._screen.bracketed_paste and self.gating:
            # C-c at the prompt of a shell that does not tell when it reads a new line: it drops
            # the line and its continuation lines. (Readline switching bracketed paste tells.)
            self.cleared()
            return
        anchor = self._current_anchor() or self._capture(deferrable=True)
        if anchor is not None and REDRAW_KEYS.search(data):
            anchor.redraw = True
        self._note_typed(data)

    def _note_typed(self, data: bytes) -> None:
        """Keep the printable keys typed on this line; any other key (an edit, a move) ends the check."""
        text = data.replace(PASTE_START, b"").replace(PASTE_END, b"")
        if any((byte < 0x20 and byte != 0x09) or byte == 0x7F for byte in text):
            self._typed_plain = False
            return
        self._typed_text += text.decode("utf-8", "replace")

    def _forget_typed(self) -> None:
        self._typed_text, self._typed_plain = "", True

    def _current_anchor(self) -> _Anchor | None:
        anchor = self._anchor
        if anchor is None or anchor.switches != self._screen.paste_switches:
            return None  # the shell accepted the line or started reading a new one since
        return anchor

    # Where the line begins.
    def _capture(self, deferrable: bool) -> _Anchor | None:
        """Start a line where the shell's prompt ends, or at the cursor (keys not yet echoed)."""
        screen = self._screen
        found = self._prompt_end(deferrable)
        if found is None:
            return None
        row, col, prompt = found
        self._anchor = _Anchor(prompt, screen.paste_switches)
        screen.marks["anchor"] = (row, col)
        drawn = screen.marks.get("drawn", (row, 0))[0] if screen.bracketed_paste else row
        screen.marks["drawn"] = (max(row, drawn), 0)
        self._start_line(prompt)
        return self._anchor

    def _prompt_end(self, deferrable: bool) -> tuple[int, int, str] | None:
        """Row, column and text of the prompt of the line read under way; None while a deferrable
        answer waits for the prompt. Keys typed ahead are echoed before the prompt and after it,
        so a known prompt where the read began, or the end of the prompt's output, is preferred."""
        screen = self._screen
        row, col = screen.cursor_cell
        origin = screen.marks.get("origin")
        start = origin[1] if origin is not None and origin[0] == row and origin[1] <= col else 0
        known = self._known_prompt()
        if known is not None:
            return known
        end = screen.marks.get("prompt_end")
        if end is not None and self._same_line(end, (row, col), 0):
            return end[0], end[1], screen.text(end[0], start if end[0] == row else 0, end[1])
        if deferrable and screen.prompt_pending and screen.bracketed_paste:
            return None
        return row, col, screen.text(row, start, col)

    def _same_line(self, at: tuple[int, int], cursor: tuple[int, int], width: int) -> bool:
        """`width` cells from `at` end at or before the cursor, on the cursor's soft-wrapped line."""
        if at[0] == cursor[0]:
            return at[1] + width <= cursor[1]
        return self._screen.line_start(cursor[0]) <= at[0] < cursor[0]

    def _prompt_now(self) -> str:
        anchor = self._current_anchor()
        if anchor is not None:
            return anchor.prompt
        found = self._prompt_end(deferrable=False)
        return found[2] if found is not None else ""

    def _known_prompt(self) -> tuple[int, int, str] | None:
        """Row, column after, and text of a known prompt drawn where the line read began, or at the
        start of a row between there and the cursor (the last row of a prompt of several)."""
        screen = self._screen
        origin = screen.marks.get("origin")
        if origin is None:
            return None
        cursor = screen.cursor_cell
        starts = [origin] + [(row, 0) for row in range(origin[0] + 1, cursor[0] + 1) if not screen.wrapped[row]]
        for row, col in starts:
            shown = screen.text(row, col)
            for prompt in (self._primary_prompt, self._continuation_prompt):
                if prompt and shown.startswith(prompt) and self._same_line((row, col), cursor, cells(prompt)):
                    return row, col + cells(prompt), prompt
        return None

    def _start_line(self, prompt: str) -> None:
        """A new line starts: it continues the command let through last, or begins a new one."""
        self._forget_typed()
        lines, self._submitted = self._submitted, None
        reading = self._screen.bracketed_paste or not self._screen.paste_seen
        if lines is not None and reading and self._continues(lines, prompt):
            self._pending = lines
            return
        self._pending = []
        if reading:
            self._primary_prompt = prompt

    def _continues(self, lines: list[str], prompt: str) -> bool:
        command = "\n".join(lines)
        if prompt == self._primary_prompt:
            return prompt == self._continuation_prompt and unfinished(command)
        if prompt == self._continuation_prompt:
            return True
        if prompt and unfinished(command):
            self._continuation_prompt = prompt  # a custom PS2, learnt
            return True
        return False

    # Reading the line off the screen.
    def _current_line(self) -> str:
        anchor = self._current_anchor() or self._capture(deferrable=False)
        assert anchor is not None  # not deferrable
        screen = self._screen
        row, col = self._line_start(anchor)
        end = max(screen.cursor.y, screen.marks.get("drawn", (row, 0))[0], row)
        while end + 1 < screen.lines and screen.wrapped[end + 1]:
            end += 1
        whole = self._rows(row, 0, end)
        searching = ISEARCH.match(whole)
        if searching:  # readline's C-r shows its own prompt, and Enter runs the match
            return whole[searching.end() :].rstrip()
        return self._rows(row, col, end).rstrip()

    def _line_start(self, anchor: _Anchor) -> tuple[int, int]:
        """The cell after the prompt, following a prompt drawn again lower down (after a completion
        listing, a clear-screen or a resize)."""
        screen = self._screen
        cursor_row = screen.cursor.y
        mark = screen.marks.get("anchor")
        if mark is not None and mark[0] > cursor_row:
            mark = None
        if mark is not None and not anchor.redraw:
            return mark
        found = self._find_prompt(anchor.prompt, cursor_row, 0 if mark is None else mark[0] + 1)
        if found is not None:
            return found, cells(anchor.prompt)
        if mark is not None:
            return mark
        start = screen.line_start(cursor_row)
        shown = screen.text(start)
        return start, cells(anchor.prompt) if anchor.prompt and shown.startswith(anchor.prompt) else 0

    def _find_prompt(self, prompt: str, from_row: int, floor: int) -> int | None:
        """The lowest row from from_row up to floor that starts a line with the prompt."""
        if not prompt:
            return None
        screen = self._screen
        for row in range(from_row, floor - 1, -1):
            if not screen.wrapped[row] and screen.text(row).startswith(prompt):
                return row
        return None

    def _rows(self, first: int, col: int, last: int) -> str:
        """Rows first..last from column col of the first: soft wraps joined, hard breaks as newlines."""
        screen = self._screen
        parts: list[str] = []
        for row in range(first, last + 1):
            text = screen.text(row, col if row == first else 0)
            continued = row < last and screen.wrapped[row + 1]
            if continued and text.endswith(" ") and cells(screen.text(row + 1, 0, 1)) == 2:
                text = text[:-1]  # readline pads the last column when a wide character does not fit
            parts.append(text if continued else text.rstrip())
            if row < last:
                parts.append("" if continued else "\n")
        return "".join(parts)
