"""The text a terminal shows, apart from the escape sequences woven into it.

Secrets are looked for in the text with every escape sequence taken out, so that colour codes
(grep --color, ls, prompts) inside a secret do not hide it. When a masked span had escape sequences
inside it, they are written right after the replacement, in order, so the terminal's state (colours,
cursor modes) ends up as the program meant while none of the secret's visible characters remain.

A sequence that moves the cursor is not nothing, though: vim and ncurses draw a screen with cursor
positioning instead of line breaks and spaces, and taking such a sequence out would join the words on
either side of it (`AKIA…EXAMPLE\x1b[2;21Hghp_…` would read as one word, and no detector that wants a
boundary would match). In the visible text a move down or to a position counts as a line feed, a move
along the line as a space; the sequence itself is kept, like any other, after a masked span.
"""

from __future__ import annotations

import bisect
import itertools
import re
from typing import NamedTuple

from bastion.masking.regex import analyse

ESC = 0x1B
# Cursor moves come first, in their own group (see TerminalView): CSI finals without intermediate
# bytes for up, down, next/previous line, position, row, scroll region (it homes the cursor), which count
# as a line feed, and forward, back, column, tab, which count as a space; ESC D, E, M (index, next line,
# reverse index), ESC 8 (restore cursor) and ESC c (reset) count as a line feed.
ESCAPE_SEQUENCE = re.compile(
    rb"\x1b(?:"
    rb"(?P<move>\[[\x30-\x3f]{0,1024}[ABCDEFGHIZ`adefjkr]|[DEM8c])"
    rb"|\[[\x30-\x3f]{0,1024}[\x20-\x2f]{0,8}[\x40-\x7e]"  # CSI: colours (SGR), modes, erasing
    rb"|\][^\x07\x18\x1a\x1b]{0,4096}(?:\x07|\x1b\\)"  # OSC: titles, hyperlinks; ended by BEL or ST
    rb"|[PX^_][^\x18\x1a\x1b]{0,4096}\x1b\\"  # DCS, SOS, PM, APC strings, ended by ST
    rb"|[\x20-\x2f]{1,4}[\x30-\x7e]"  # nF: character set designations such as ESC ( B
    rb"|[\x30-\x7e]"  # two-byte sequences: ESC 7, ESC =, ESC M ...
    rb")"
)
_SPACE_FINALS = frozenset(b"CDG`ajIZ")  # a CSI move along the line; "D" alone after ESC is index (down)
_SHAPE = analyse(ESCAPE_SEQUENCE)
_UNFINISHED = _SHAPE.undecided
LONGEST_SEQUENCE = _SHAPE.reach  # the most raw bytes an unfinished escape sequence holds back


class Replacement(NamedTuple):
    """Text positions [start, end) are shown as `text` (b"" drops them)."""

    start: int
    end: int
    text: bytes


class TerminalView:
    """Raw output split into visible text and escape sequences, with positions mapped between them."""

    def __init__(self, raw: bytes, final: bool) -> None:
        self.raw = raw
        self.cut = len(raw)  # raw bytes from here on are an unfinished escape sequence
        self._sequences: list[tuple[int, int]] = []  # raw (start, end) of each sequence
        # 2 x (text position of each sequence) + 1 if it shows as a separator (a cursor move), so that
        # bisect puts a separator after the text before it and a hidden sequence before the text after it
        self._keys: list[int] = []
        self._hidden_before: list[int] = [0]  # raw bytes hidden by the sequences before each one
        first = raw.find(b"\x1b")
        if first < 0:
            self.text = raw
            return
        moves = self._split(first, final)
        spans = self._sequences
        lengths = [end - start for start, end in spans]
        for index in moves:
            lengths[index] -= 1  # a cursor move shows as one byte of text
        self._hidden_before = [0, *itertools.accumulate(lengths)]
        self._keys = [2 * (start - hidden) for (start, _), hidden in zip(spans, self._hidden_before, strict=False)]
        ends = [0, *(end for _, end in spans)]  # text runs between the sequences, and after the last
        starts = [*(start for start, _ in spans), self.cut]
        runs = [raw[last:start] for last, start in zip(ends, starts, strict=True)]
        for index in moves:
            self._keys[index] += 1
            start, end = spans[index]
            along = end - start > 2 and raw[end - 1] in _SPACE_FINALS
            runs[index] += b" " if along else b"\n"
        self.text = b"".join(runs)

    def _split(self, first: int, final: bool) -> list[int]:
        """Finds the sequences; returns the indexes of the cursor moves among them."""
        raw = self.raw
        # Sequences that start this far from the end cannot be unfinished: the regex engine finds them in
        # one pass (a lone ESC it skips is shown as text); only the tail is walked sequence by sequence.
        safe = len(raw) if final else len(raw) - LONGEST_SEQUENCE
        matches = list(ESCAPE_SEQUENCE.finditer(raw, first)) if first < safe else []
        spans = [match.span() for match in matches]
        kept = bisect.bisect_left(spans, (safe, 0))
        del spans[kept:]
        moves = [index for index, match in enumerate(matches[:kept]) if match.lastindex]
        at = raw.find(b"\x1b", spans[-1][1] if spans else first)
        while at >= 0:
            if not final and _UNFINISHED.match(raw, at):
                self.cut = at
                break
            match = ESCAPE_SEQUENCE.match(raw, at)
            if match:
                if match.lastindex:
                    moves.append(len(spans))
                spans.append((at, match.end()))
                at = raw.find(b"\x1b", match.end())
            else:  # a lone ESC is shown as text
                at = raw.find(b"\x1b", at + 1)
        self._sequences = spans
        return moves

    def raw_start(self, position: int) -> int:
        """Raw offset of text position `position`, after the sequences just before it."""
        return position + self._hidden_before[bisect.bisect_right(self._keys, 2 * position)]

    def raw_end(self, position: int) -> int:
        """Raw offset where text ending at `position` ends, before the sequences right after it."""
        return position + self._hidden_before[bisect.bisect_left(self._keys, 2 * position)]

    def render(self, replacements: list[Replacement], release: int, skip: int = 0, continued: bool = False) -> bytes:
        """Raw bytes up to text position `release` with the replacements applied.

        From raw offset `skip` on (the client was shown the bytes before it early): a replacement that
        starts before `skip` and ends after it gives its text too, unless `continued` says that what the
        client was shown already ended in a replacement; the escape sequences inside it after `skip` follow.
        """
        out: list[bytes] = []
        done = skip
        for replacement in replacements:
            start, end = self.raw_start(replacement.start), self.raw_end(replacement.end)
            if end <= skip:
                continue
            if start < skip:
                if not continued:
                    out.append(replacement.text)
                out.extend(self._sequences_within(skip, end))
            else:
                out.append(self.raw[done:start])
                out.append(replacement.text)
                out.extend(self._sequences_within(start, end))
            done = end
        out.append(self.raw[done : self.release_offset(release)])
        return b"".join(out)

    def release_offset(self, release: int) -> int:
        """Raw bytes up to text position `release`, with the sequences just before it."""
        return self.raw_start(release)

    def _sequences_within(self, start: int, end: int) -> list[bytes]:
        if not self._sequences:
            return []
        first = bisect.bisect_left(self._sequences, (start, start))
        inside = []
        for seq_start, seq_end in self._sequences[first:]:
            if seq_start >= end:
                break
            inside.append(self.raw[seq_start:seq_end])
        return inside
