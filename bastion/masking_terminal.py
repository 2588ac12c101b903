"""The text a terminal shows, apart from the escape sequences woven into it.

Secrets are looked for in the text with every escape sequence taken out, so that colour codes
(grep --color, ls, prompts) inside a secret do not hide it. When a masked span had escape sequences
inside it, they are written right after the replacement, in order, so the terminal's state (colours,
cursor modes) ends up as the program meant while none of the secret's visible characters remain.
"""

from __future__ import annotations

import bisect
import itertools
import re
from typing import NamedTuple

from bastion.masking_regex import analyse

ESC = 0x1B
ESCAPE_SEQUENCE = re.compile(
    rb"\x1b(?:"
    rb"\[[\x30-\x3f]{0,64}[\x20-\x2f]{0,8}[\x40-\x7e]"  # CSI: colours (SGR), cursor movement, modes
    rb"|\][^\x07\x18\x1a\x1b]{0,4096}(?:\x07|\x1b\\)"  # OSC: titles, hyperlinks; ended by BEL or ST
    rb"|[PX^_][^\x18\x1a\x1b]{0,4096}\x1b\\"  # DCS, SOS, PM, APC strings, ended by ST
    rb"|[\x20-\x2f]{1,4}[\x30-\x7e]"  # nF: character set designations such as ESC ( B
    rb"|[\x30-\x7e]"  # two-byte sequences: ESC 7, ESC =, ESC M ...
    rb")"
)
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
        self._text_at: list[int] = []  # text position of each sequence
        self._hidden_before: list[int] = [0]  # raw bytes of the sequences before each one
        first = raw.find(b"\x1b")
        if first < 0:
            self.text = raw
            return
        self._split(first, final)
        ends = [0, *(end for _, end in self._sequences)]  # text runs between the sequences, and after the last
        starts = [*(start for start, _ in self._sequences), self.cut]
        self.text = b"".join([raw[last:start] for last, start in zip(ends, starts, strict=True)])

    def _split(self, first: int, final: bool) -> None:
        raw = self.raw
        # Sequences that start this far from the end cannot be unfinished: the regex engine finds them in
        # one pass (a lone ESC it skips is shown as text); only the tail is walked sequence by sequence.
        safe = len(raw) if final else len(raw) - LONGEST_SEQUENCE
        spans = [match.span() for match in ESCAPE_SEQUENCE.finditer(raw, first)] if first < safe else []
        spans = spans[: bisect.bisect_left(spans, (safe, 0))]
        self._sequences = spans
        self._hidden_before = [0, *itertools.accumulate(end - start for start, end in spans)]
        self._text_at = [start - hidden for (start, _), hidden in zip(spans, self._hidden_before, strict=False)]
        at = raw.find(b"\x1b", spans[-1][1] if spans else first)
        while at >= 0:
            if not final and _UNFINISHED.match(raw, at):
                self.cut = at
                return
            match = ESCAPE_SEQUENCE.match(raw, at)
            if match:
                hidden = self._hidden_before[-1]
                self._text_at.append(at - hidden)
                self._sequences.append((at, match.end()))
                self._hidden_before.append(hidden + match.end() - at)
                at = raw.find(b"\x1b", match.end())
            else:  # a lone ESC is shown as text
                at = raw.find(b"\x1b", at + 1)

    def raw_start(self, position: int) -> int:
        """Raw offset of text position `position`, after the sequences just before it."""
        return position + self._hidden_before[bisect.bisect_right(self._text_at, position)]

    def raw_end(self, position: int) -> int:
        """Raw offset where text ending at `position` ends, before the sequences right after it."""
        return position + self._hidden_before[bisect.bisect_left(self._text_at, position)]

    def render(self, replacements: list[Replacement], release: int) -> bytes:
        """Raw bytes up to text position `release` with the replacements applied."""
        out: list[bytes] = []
        done = 0
        for replacement in replacements:
            start, end = self.raw_start(replacement.start), self.raw_end(replacement.end)
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
