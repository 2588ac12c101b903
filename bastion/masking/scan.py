"""One pass of the masker over the visible text it has: which spans to replace, and up to where the
result is final.

Semantics: at each position the leftmost match of any detector wins (ties: the earlier detector),
and scanning goes on after it, as `re.finditer` would with all detectors in one alternation. A start
position is final once no path of any detector's regex from there looks past the end of the text
(`RegexShape.undecided`); only bytes from the first position that is not final are held back.
Because every decision depends only on the bytes around it, never on where a chunk ended, feeding
output in any pieces gives the same result as masking it whole.
"""

from __future__ import annotations

import bisect
import heapq
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bastion.masking.packs import ANCHOR_PASSES, ANCHORS, BLOCK_END, BLOCK_STEP, Detector
from bastion.masking.regex import analyse
from bastion.masking.terminal import Replacement

Hits = dict[str, list[int]]  # family -> start of each of its anchors, in order
# the most bytes an anchor of each family (with the offset of its reported position) spans
_ANCHOR_REACH: dict[str, int] = {}
for _family, _source, _offset in ANCHORS:
    _ANCHOR_REACH[_family] = max(_ANCHOR_REACH.get(_family, 0), analyse(re.compile(_source)).reach + _offset)


def tail_of(detector: Detector) -> int:
    """How far from the end an unfinished anchor of the detector's family (and its lead) may start."""
    return _ANCHOR_REACH.get(detector.family or "", 1 << 30) + detector.before + 1


class _HoldPlan:
    """Per set of detectors: which may hold text ending in each byte (their regex can consume it), and tails."""

    def __init__(self, detectors: Sequence[Detector]) -> None:
        self.detectors = detectors  # kept: the plan is found by the id of this very sequence
        self.tails = [tail_of(detector) for detector in detectors]
        self.by_last_byte = [
            tuple(index for index, detector in enumerate(detectors) if byte in detector.shape.consumable)
            for byte in range(256)
        ]


_PLANS: dict[int, _HoldPlan] = {}


def _plan(detectors: Sequence[Detector]) -> _HoldPlan:
    plan = _PLANS.get(id(detectors))
    if plan is None or plan.detectors is not detectors:
        plan = _PLANS[id(detectors)] = _HoldPlan(detectors)
    return plan
_SHAPE = bytes.maketrans(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"0" * 10 + b"A" * 26)


class LiteralPrefilter:
    """Anchors found with the standard library: one `re` pass per literal, each fast on its own."""

    name = "re"

    def __init__(self, families: Sequence[str]) -> None:
        wanted = set(families)
        self._passes = [
            (view, compiled)
            for view, source in ANCHOR_PASSES
            if wanted & set((compiled := re.compile(source)).groupindex)
        ]

    def hits(self, text: bytes, start: int) -> Hits:
        found: Hits = {}
        views = {"text": text}
        for view, pattern in self._passes:
            if view not in views:
                views[view] = text.lower() if view == "lower" else text.translate(_SHAPE)
            _collect(pattern, views[view], start, found)
        for family, starts in found.items():
            found[family] = sorted(set(starts))  # two passes may serve one family
        return found


class CombinedPrefilter:
    """Anchors found by one alternation, in one pass of google-re2's automaton."""

    name = "re2"

    def __init__(self, families: Sequence[str], engine: Any) -> None:
        wanted = [anchor for anchor in ANCHORS if anchor[0] in set(families)]
        self._families = [family for family, _, _ in wanted]
        self._offsets = [offset for _, _, offset in wanted]
        self._regex = engine.compile(b"|".join(b"(" + source + b")" for _, source, _ in wanted))
        # google-re2's compiled RE2 object: one C++ call per anchor instead of a Match object built in Python.
        # (A scan without groups plus an anchored match at each hit was measured: no faster on sparse
        # output, slower on output dense with secrets.)
        self._raw = getattr(self._regex, "_regexp", None)
        self._unanchored = getattr(getattr(engine, "_Anchor", None), "UNANCHORED", None)

    def hits(self, text: bytes, start: int) -> Hits:
        if not self._families:
            return {}  # (an empty alternation would match the empty string everywhere)
        if self._raw is None or self._unanchored is None:
            return self._hits_public(text, start)
        found: Hits = {}
        match, anchor, end, families = self._raw.Match, self._unanchored, len(text), self._families
        spans = match(anchor, text, start, end)
        while spans[0][0] >= 0:  # from the next byte on, not from the end: anchors may overlap
            group = spans.index(spans[0], 1) - 1  # each family's group spans its whole alternative
            found.setdefault(families[group], []).append(spans[0][0] + self._offsets[group])
            spans = match(anchor, text, spans[0][0] + 1, end)
        return found

    def _hits_public(self, text: bytes, start: int) -> Hits:
        found: Hits = {}
        found_match = self._regex.search(text, start)
        while found_match is not None:
            group = found_match.lastindex - 1
            found.setdefault(self._families[group], []).append(found_match.start() + self._offsets[group])
            found_match = self._regex.search(text, found_match.start() + 1)
        return found


def _collect(pattern: re.Pattern[bytes], view: bytes, start: int, found: Hits) -> None:
    match = pattern.search(view, start)
    while match is not None:
        found.setdefault(match.lastgroup or "", []).append(match.start())
        match = pattern.search(view, match.start() + 1)


Prefilter = LiteralPrefilter | CombinedPrefilter


def best_prefilter(families: Sequence[str]) -> Prefilter:
    """google-re2 when it is installed (one pass), else the standard library."""
    try:
        import re2  # type: ignore[import-not-found]
    except ImportError:
        return LiteralPrefilter(families)
    return CombinedPrefilter(families, re2)


@dataclass
class ScanResult:
    replacements: list[Replacement]
    masked: list[str]  # detector names, one per replacement made
    release: int  # text before this position is final
    in_block: bool  # inside a private key block at `release`


class Scan:
    """Finds the replacements in `text[start:]`; `text[:start]` is context already released."""

    def __init__(
        self, detectors: Sequence[Detector], prefilter: Prefilter, text: bytes, start: int, final: bool
    ) -> None:
        self.detectors = detectors
        self.text = text
        self.end = len(text)
        self.final = final
        self._prefilter = prefilter
        self._start = start
        self._last_line_feed = text.rfind(b"\n", start)
        # candidate matches, leftmost first (ties: the earlier detector): (start, detector, anchor, match);
        # anchor -1: a detector without a family, whose next match is searched again when it is passed
        self._queue: list[tuple[int, int, int, re.Match[bytes]]] = []
        self._undecided: list[int] = [-1] * len(detectors)  # first start not final, at or after a position
        self._hits: Hits | None = None  # the anchors the prefilter found (once the queue is filled)
        self._hold_at, self._hold_value = -1, -1  # the hold last computed, and from where
        self.result = ScanResult([], [], start, False)

    def run(self, in_block: bool) -> ScanResult:
        """In a final pass nothing is held; a block that may go on stays open for the next bytes."""
        position = self._start
        if in_block:
            position, in_block = self._block(position)
            if in_block and not self.final:
                return self._finish(position, in_block)
        self._fill_queue(position)
        while True:
            found = self._leftmost(position)
            hold = self.end if self.final else self._hold(position)
            if found is None or found[1].start() >= hold:
                return self._finish(hold, in_block)
            index, match = found
            detector = self.detectors[index]
            self._replace(detector, match)
            position = match.end()
            if detector.opens_block:
                position, in_block = self._block(position)
                if in_block and not self.final:
                    return self._finish(position, in_block)

    def _finish(self, release: int, in_block: bool) -> ScanResult:
        self.result.release = release
        self.result.in_block = in_block
        return self.result

    def _replace(self, detector: Detector, match: re.Match[bytes]) -> None:
        start, end = match.span()
        for group in detector.secret_groups:
            if match.start(group) >= 0:
                start, end = match.span(group)
                break
        self.result.replacements.append(Replacement(start, end, detector.replacement))
        self.result.masked.append(detector.name)

    # Private key blocks: what follows the BEGIN line is dropped step by step, up to the END line.

    def _block(self, position: int) -> tuple[int, bool]:
        """Drops block steps from `position`; returns where it stopped and whether the block goes on."""
        while True:
            open_at_end = BLOCK_STEP.undecided.match(self.text, position) is not None
            if open_at_end and not self.final:
                return position, True
            step = BLOCK_STEP.pattern.match(self.text, position)
            if step is None:
                return position, open_at_end
            self._drop(position, step.end())
            position = step.end()
            if step.group(BLOCK_END) is not None:
                return position, False

    def _drop(self, start: int, end: int) -> None:
        replacements = self.result.replacements
        if replacements and replacements[-1].end == start:
            last = replacements[-1]
            replacements[-1] = Replacement(last.start, end, last.text)
        else:
            replacements.append(Replacement(start, end, b""))

    # Which starts are final --------------------------------------------------------------------

    def _hold(self, position: int) -> int:
        """The first start at or after `position` that is not final (the end of the text if none)."""
        if 0 <= self._hold_at <= position <= self._hold_value:
            return self._hold_value  # every cached first-undecided start is still at or after `position`
        hold = self.end
        if not self.text:
            return hold
        plan = _plan(self.detectors)
        undecided = self._undecided
        for index in plan.by_last_byte[self.text[-1]]:  # the others have no trailing run to hold
            if undecided[index] < position:
                undecided[index] = self._first_undecided(self.detectors[index], position, plan.tails[index])
            if undecided[index] < hold:
                hold = undecided[index]
        self._hold_at, self._hold_value = position, hold
        return hold

    def _first_undecided(self, detector: Detector, position: int, tail: int) -> int:
        shape = detector.shape
        start = max(position, self.end - shape.reach)
        if shape.single_line:
            start = max(start, self._last_line_feed + 1)
        if detector.family is not None and self._hits is not None:
            # Every path of the detector goes through an anchor of its family, at most `before` bytes after
            # it starts: a start that is not final is at or just before an anchor the prefilter found, or so
            # near the end that its anchor is not complete yet.
            anchors = self._hits.get(detector.family, ())
            first = bisect.bisect_left(anchors, start)
            lowest = self.end - tail
            if first < len(anchors):
                lowest = min(lowest, anchors[first] - detector.before)
            start = max(start, lowest)
            if start >= self.end:
                return self.end
        # a path that reaches the end consumes or looks at every byte on the way: only the trailing run of
        # bytes the regex can consume can hold an undecided start (a cheap test before the regex itself)
        run = self.end - start - len(self.text[start:].rstrip(shape.consumable))
        if run == 0:
            return self.end
        found = shape.undecided.search(self.text, self.end - run)
        return found.start() if found else self.end

    # Candidate matches ---------------------------------------------------------------------------

    def _fill_queue(self, position: int) -> None:
        """A candidate at every anchor (and at the lead before it); the first match of the others."""
        queue = self._queue
        by_family: dict[str, list[int]] = {}
        for index, detector in enumerate(self.detectors):
            if detector.family is None:
                self._push_next(index, position)
            else:
                by_family.setdefault(detector.family, []).append(index)
        if by_family:
            self._hits = self._prefilter.hits(self.text, self._start)
            for family, anchors in self._hits.items():
                for index in by_family.get(family, ()):
                    detector = self.detectors[index]
                    for anchor in anchors:
                        self._push_at_anchor(index, detector, anchor, position)
        heapq.heapify(queue)

    def _leftmost(self, position: int) -> tuple[int, re.Match[bytes]] | None:
        """The candidate that starts first at or after `position`; passed ones are dropped or renewed."""
        queue = self._queue
        while queue:
            start, index, anchor, match = queue[0]
            if start >= position:
                return index, match
            heapq.heappop(queue)
            if anchor < 0:
                self._push_next(index, position, heap=True)
            elif anchor >= position and self.detectors[index].lead is not None:
                self._push_at_anchor(index, self.detectors[index], anchor, position, heap=True)
        return None

    def _push_next(self, index: int, position: int, heap: bool = False) -> None:
        detector, pattern = self.detectors[index], self.detectors[index].pattern
        match = pattern.search(self.text, position)
        while match is not None and not self._valid(detector, match):
            match = pattern.search(self.text, match.start() + 1)
        if match is not None:
            self._push((match.start(), index, -1, match), heap)

    def _push_at_anchor(self, index: int, detector: Detector, anchor: int, position: int, heap: bool = False) -> None:
        if anchor < position:
            return
        reach = detector.shape.reach
        if detector.lead is not None:
            lead = detector.lead.search(self.text, max(position, anchor - detector.before), anchor)
            if lead is not None and lead.start() < anchor:
                match = detector.pattern.match(self.text, lead.start(), lead.start() + reach)
                if match is not None and self._valid(detector, match):
                    self._push((match.start(), index, anchor, match), heap)
                    return
        match = detector.pattern.match(self.text, anchor, anchor + reach)
        if match is not None and self._valid(detector, match):
            self._push((anchor, index, anchor, match), heap)

    def _push(self, entry: tuple[int, int, int, re.Match[bytes]], heap: bool) -> None:
        if heap:
            heapq.heappush(self._queue, entry)
        else:
            self._queue.append(entry)

    @staticmethod
    def _valid(detector: Detector, match: re.Match[bytes]) -> bool:
        if detector.check is None:
            return True
        for group in detector.secret_groups:
            if match.start(group) >= 0:
                return detector.check(match.group(group))
        return detector.check(match.group())
