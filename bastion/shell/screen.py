"""The terminal screen a shell draws on, emulated with pyte; pure.

pyte lacks what reconstructing a command line needs: which rows are soft-wrapped, marks that follow
cells through scrolling, the main screen kept under the alternate one, and where a line read and
its prompt begin. `Screen` adds them; `ScreenListener` keeps pyte's parser from passing private
(CSI ?) variants to handlers that cannot take them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import pyte
from pyte import modes
from pyte.screens import Char, StaticDefaultDict
from wcwidth import wcswidth, wcwidth

__all__ = ["ALTERNATE_SCREENS", "BRACKETED_PASTE", "Screen", "ScreenListener", "cells"]

ALTERNATE_SCREENS = frozenset({47, 1047, 1049})
BRACKETED_PASTE = 2004
TAKES_PRIVATE = frozenset({"set_mode", "reset_mode", "erase_in_line", "erase_in_display", "report_device_attributes"})


def cells(text: str) -> int:
    width = wcswidth(text)
    return width if width >= 0 else len(text)


@dataclass
class SavedScreen:
    buffer: dict[int, StaticDefaultDict[int, Char]]
    wrapped: list[bool]
    marks: dict[str, tuple[int, int]]
    cursor: pyte.screens.Cursor


class Screen(pyte.Screen):  # type: ignore[misc]
    """A pyte screen that knows soft-wrapped rows, follows marked cells through scrolling, keeps
    the main screen under the alternate one (pyte has none) and notes where each line read and
    its prompt begin and end."""

    def __init__(self, columns: int, lines: int) -> None:
        self.wrapped: list[bool] = [False] * lines  # row continues the row above (autowrap)
        # name -> (row, column), rows moved by scrolling, dropped when scrolled off or erased:
        # "origin" where the shell's line read began, "prompt_end" after its prompt was drawn,
        # "anchor" where the tracker's line begins, "drawn" the lowest row drawn on since.
        self.marks: dict[str, tuple[int, int]] = {}
        self.line_reads = 0  # times bracketed paste was switched on: readline started a line
        self.paste_switches = 0  # times it was switched on or off: readline started or ended a line
        self.paste_seen = False
        self.prompt_pending = False  # a line read began and its prompt's end is not known yet
        self.drew = False  # something was drawn since the line read began
        self.saved_main: SavedScreen | None = None
        self._drawing = False
        super().__init__(columns, lines)

    @property
    def alternate(self) -> bool:
        return self.saved_main is not None

    @property
    def bracketed_paste(self) -> bool:
        return (BRACKETED_PASTE << 5) in self.mode

    @property
    def cursor_cell(self) -> tuple[int, int]:
        return self.cursor.y, min(self.cursor.x, self.columns)

    def reset(self) -> None:
        super().reset()
        self.wrapped = [False] * self.lines
        self.marks = {}
        self.saved_main = None

    def resize(self, lines: int | None = None, columns: int | None = None) -> None:
        super().resize(lines, columns)
        self._fit()

    def alignment_display(self) -> None:
        # DECALN (ESC # 8) fills every cell with "E": a test pattern, no command line, and the one
        # sequence that makes pyte draw the whole screen from 3 bytes (a flood of it stalls the bastion).
        pass

    def _fit(self) -> None:
        """Wrap flags and marks for the current number of rows."""
        self.wrapped = (self.wrapped + [False] * self.lines)[: self.lines]
        self.marks = {name: cell for name, cell in self.marks.items() if cell[0] < self.lines}
        self.cursor.y = min(self.cursor.y, self.lines - 1)
        self.cursor.x = min(self.cursor.x, self.columns)

    def end_of_output(self) -> None:
        """A chunk of output ended: if it drew the prompt of a new line read, its end is here (not
        at the start of a row: that is the end of the first rows of a prompt of several)."""
        if self.prompt_pending and self.drew and self.cursor.x > 0:
            self.prompt_pending = False
            self.marks["prompt_end"] = self.cursor_cell

    # Soft wraps: pyte wraps by a linefeed from inside draw().
    def draw(self, data: str) -> None:
        self._drawing = True
        try:
            if data.isascii():
                super().draw(data)
            else:
                for char in data:
                    self._wrap_early(char)
                    super().draw(char)
        finally:
            self._drawing = False
        self.drew = True
        lowest = max(self.marks.get("drawn", (-1, 0))[0], self.cursor.y)
        self.marks["drawn"] = (lowest, 0)

    def _wrap_early(self, char: str) -> None:
        """Like xterm (and readline's model of it), not pyte: a wide character that does not fit
        in the last column goes to the next row, leaving that column as padding (no text)."""
        if wcwidth(char) == 2 and self.cursor.x == self.columns - 1 and modes.DECAWM in self.mode:
            self.buffer[self.cursor.y][self.cursor.x] = self.cursor.attrs._replace(data="")
            self.cursor.x = self.columns

    def linefeed(self) -> None:
        super().linefeed()
        if self._drawing:
            self.wrapped[self.cursor.y] = True

    def erase_in_line(self, how: int = 0, private: bool = False) -> None:
        super().erase_in_line(how, private)
        y = self.cursor.y
        if how in (0, 2) and y + 1 < self.lines:
            self.wrapped[y + 1] = False  # the row no longer reaches the last column
        if how in (1, 2):
            self.wrapped[y] = False

    def erase_in_display(self, how: int = 0, *args: object, **kwargs: object) -> None:
        super().erase_in_display(how, *args, **kwargs)
        if how in (2, 3):
            self.wrapped = [False] * self.lines
            self.marks = {}
        elif how == 0:
            self.wrapped[self.cursor.y + 1 :] = [False] * (self.lines - self.cursor.y - 1)

    # Scrolling moves rows, their wrap flags and the marks on them.
    def index(self) -> None:
        top, bottom = self.margins or pyte.screens.Margins(0, self.lines - 1)
        if self.cursor.y == bottom:
            self._shift(top, bottom, -1)
        super().index()

    def reverse_index(self) -> None:
        top, bottom = self.margins or pyte.screens.Margins(0, self.lines - 1)
        if self.cursor.y == top:
            self._shift(top, bottom, 1)
        super().reverse_index()

    def insert_lines(self, count: int | None = None) -> None:
        top, bottom = self.margins or pyte.screens.Margins(0, self.lines - 1)
        if top <= self.cursor.y <= bottom:
            self._shift(self.cursor.y, bottom, count or 1)
        super().insert_lines(count)

    def delete_lines(self, count: int | None = None) -> None:
        top, bottom = self.margins or pyte.screens.Margins(0, self.lines - 1)
        if top <= self.cursor.y <= bottom:
            self._shift(self.cursor.y, bottom, -(count or 1))
        super().delete_lines(count)

    def _shift(self, top: int, bottom: int, by: int) -> None:
        """Rows top..bottom move by `by`; rows pushed out of the region are gone."""
        size = bottom + 1 - top
        moved = min(abs(by), size)
        region = self.wrapped[top : bottom + 1]
        blank = [False] * moved
        self.wrapped[top : bottom + 1] = region[moved:] + blank if by < 0 else blank + region[: size - moved]
        for name, (row, col) in list(self.marks.items()):
            if top <= row <= bottom:
                if top <= row + by <= bottom:
                    self.marks[name] = (row + by, col)
                else:
                    del self.marks[name]

    # Private modes: the alternate screen and bracketed paste.
    def set_mode(self, *modes_: int, **kwargs: object) -> None:
        reading = self.bracketed_paste
        super().set_mode(*modes_, **kwargs)
        if not kwargs.get("private"):
            return
        if ALTERNATE_SCREENS & set(modes_) and not self.alternate:
            self._enter_alternate()
        if BRACKETED_PASTE in modes_ and not reading:
            self.paste_seen = True
            self.line_reads += 1
            self.paste_switches += 1
            self.prompt_pending, self.drew = True, False
            self.marks["origin"] = self.cursor_cell
            self.marks["drawn"] = (self.cursor.y, 0)
            self.marks.pop("prompt_end", None)

    def reset_mode(self, *modes_: int, **kwargs: object) -> None:
        reading = self.bracketed_paste
        super().reset_mode(*modes_, **kwargs)
        if reading and not self.bracketed_paste:
            self.paste_switches += 1
        if kwargs.get("private") and ALTERNATE_SCREENS & set(modes_) and self.saved_main is not None:
            self._leave_alternate(self.saved_main)

    def _enter_alternate(self) -> None:
        self.saved_main = SavedScreen(self.buffer, self.wrapped, self.marks, self.cursor)
        self.buffer = defaultdict(lambda: StaticDefaultDict[int, Char](self.default_char))
        self.wrapped = [False] * self.lines
        self.marks = {}
        self.cursor = pyte.screens.Cursor(self.cursor.x, self.cursor.y, self.cursor.attrs)

    def _leave_alternate(self, main: SavedScreen) -> None:
        self.saved_main = None
        self.buffer, self.marks, self.cursor, self.wrapped = main.buffer, main.marks, main.cursor, main.wrapped
        self._fit()
        self.ensure_hbounds()
        self.ensure_vbounds()

    # Reading the screen.
    def text(self, row: int, start: int = 0, end: int | None = None) -> str:
        """The characters shown in cells start..end of a row (wide characters once)."""
        line = self.buffer[row]
        stop = self.columns if end is None else min(end, self.columns)
        return "".join(line[x].data for x in range(start, stop))

    def line_start(self, row: int) -> int:
        """The first row of the soft-wrapped run that contains `row`."""
        while row > 0 and self.wrapped[row]:
            row -= 1
        return row


class ScreenListener:
    """What pyte's parser calls: the screen's handlers, minus the private (CSI ?) variants that
    pyte would pass to handlers that cannot take them (it raises TypeError on `CSI ? m`)."""

    def __init__(self, screen: Screen) -> None:
        self._screen = screen

    def __getattr__(self, name: str) -> object:
        handler = getattr(self._screen, name)
        if name in TAKES_PRIVATE or not callable(handler):
            return handler

        def call(*args: object, **kwargs: object) -> object:
            return None if kwargs.get("private") else handler(*args, **kwargs)

        return call


