"""What a streaming masker must know about a regex: how far matching can look, and where a match could
still be undecided at the end of the bytes seen so far.

The masker holds back only the bytes from which a match could still change when more output arrives.
`RegexShape.undecided` matches at a start position exactly when some path of the regex engine from
there would look at the end of the buffer: everything before the first such position is final.
It is derived from the parse tree of the exact pattern (`re._parser`, stable since Python 3.11).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# The bounds of a detector (its longest match, its lookbehind) come from the regex's parse tree, and CPython
# offers no public parser: `sre_parse` is this same module under a name deprecated since 3.11.
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

FAIL = b"(?!)"
AT_END = b"\\Z"
REPEAT_CAP = 256  # a custom pattern's unbounded repetition (+, *, {n,}) matches at most this many times
REACH_LIMIT = 16384  # a pattern that can look further than this from its start is refused

_REPEATS = (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT)
_CHARS = (sre.LITERAL, sre.NOT_LITERAL, sre.ANY, sre.IN)
_FLAG_LETTERS = ((re.IGNORECASE, "i"), (re.MULTILINE, "m"), (re.DOTALL, "s"))
_CATEGORIES = {
    sre.CATEGORY_DIGIT: b"\\d",
    sre.CATEGORY_NOT_DIGIT: b"\\D",
    sre.CATEGORY_SPACE: b"\\s",
    sre.CATEGORY_NOT_SPACE: b"\\S",
    sre.CATEGORY_WORD: b"\\w",
    sre.CATEGORY_NOT_WORD: b"\\W",
}
_ASSERTIONS = {
    sre.AT_BEGINNING: b"^",
    sre.AT_BEGINNING_LINE: b"^",
    sre.AT_END: b"$",
    sre.AT_END_LINE: b"$",
    sre.AT_BOUNDARY: b"\\b",
    sre.AT_NON_BOUNDARY: b"\\B",
    sre.AT_BEGINNING_STRING: b"\\A",
    sre.AT_END_STRING: b"\\Z",
}
# What an assertion at the end of the buffer may still turn out to be once more bytes arrive.
_UNDECIDED_AT_END = {
    sre.AT_END: b"(?=\\n?\\Z)",
    sre.AT_END_LINE: AT_END,
    sre.AT_END_STRING: AT_END,
    sre.AT_BOUNDARY: AT_END,
    sre.AT_NON_BOUNDARY: AT_END,
}


class UnsupportedPattern(ValueError):
    """A regex the streaming masker cannot apply; the message says why in one line."""


@dataclass(frozen=True)
class RegexShape:
    pattern: re.Pattern[bytes]  # the exact pattern (for custom patterns: with repetitions capped)
    undecided: re.Pattern[bytes]  # matches at s iff matching from s could look past the end of the buffer
    reach: int  # most bytes from a start that matching can look at (match plus lookahead, plus one)
    lookbehind: int  # most bytes before a start that matching can look at
    single_line: bool  # no path crosses a line feed, so nothing before the last one is undecided
    shortest: int  # fewest bytes a match consumes
    consumable: bytes  # every byte some path can consume or look ahead at: a run of others ends a match


def analyse(pattern: re.Pattern[bytes], *, cap_repeats: bool = False) -> RegexShape:
    """The shape of `pattern`; `cap_repeats` bounds unbounded repetitions (for operators' patterns)."""
    tree = sre_parse.parse(pattern.pattern, pattern.flags)
    items = list(tree)
    _refuse_unsupported(items)
    flags = pattern.flags & (re.IGNORECASE | re.MULTILINE | re.DOTALL)
    emit = _Emitter(groups={number: name for name, number in pattern.groupindex.items()}, cap=cap_repeats)
    if cap_repeats:
        pattern = re.compile(emit.full(items, capture=True), flags)
    reach = _reach(items, cap_repeats)[1] + 1
    if reach > REACH_LIMIT:
        raise UnsupportedPattern(f"it can match more than {REACH_LIMIT} bytes; bound its repetitions")
    return RegexShape(
        pattern=pattern,
        undecided=re.compile(emit.undecided(items), flags),
        reach=reach,
        lookbehind=_lookbehind(items),
        single_line=not any(_matches_line_feed(item, flags) for item in _consumers(items)),
        shortest=tree.getwidth()[0],
        consumable=_consumable(items, flags),
    )


def _refuse_unsupported(items: list[Any]) -> None:
    for op, av in _walk(items):
        if op in (sre.GROUPREF, sre.GROUPREF_EXISTS):
            raise UnsupportedPattern("backreferences are not supported")
        if op is sre.AT and av in (sre.AT_BEGINNING_STRING, sre.AT_END_STRING):
            raise UnsupportedPattern("\\A and \\Z are not supported: output is a stream (use ^ and $ for lines)")


def _walk(items: Iterable[Any]) -> Iterable[tuple[Any, Any]]:
    for op, av in items:
        yield op, av
        for sub in _children(op, av):
            yield from _walk(sub)


def _children(op: Any, av: Any) -> list[Any]:
    if op in _REPEATS:
        return [av[2]]
    if op is sre.SUBPATTERN:
        return [av[3]]
    if op is sre.ATOMIC_GROUP:
        return [av]
    if op is sre.BRANCH:
        return list(av[1])
    if op in (sre.ASSERT, sre.ASSERT_NOT):
        return [av[1]]
    if op is sre.GROUPREF_EXISTS:
        return [branch for branch in av[1:] if branch is not None]
    return []


def _consumers(items: Iterable[Any]) -> Iterable[tuple[Any, Any]]:
    """Every single-byte matcher, lookaheads included (lookbehinds never look forward)."""
    for op, av in items:
        if op in _CHARS:
            yield op, av
        elif not (op in (sre.ASSERT, sre.ASSERT_NOT) and av[0] < 0):
            for sub in _children(op, av):
                yield from _consumers(sub)


def _matches_line_feed(item: tuple[Any, Any], flags: int) -> bool:
    source = _Emitter(groups={}, cap=False).full([item], capture=False)
    return re.fullmatch(source, b"\n", flags) is not None


def _consumable(items: list[Any], flags: int) -> bytes:
    every_byte = bytes(range(256))
    found: set[int] = set()
    for item in _consumers(items):
        source = _Emitter(groups={}, cap=False).full([item], capture=False)
        found.update(b"".join(re.findall(source, every_byte, flags)))
    return bytes(sorted(found))


def _width(items: Iterable[Any], cap: bool) -> int:
    """Most bytes the sequence consumes (lookarounds consume nothing)."""
    return _reach(items, cap)[0]


def _reach(items: Iterable[Any], cap: bool) -> tuple[int, int]:
    """Most bytes the sequence consumes, and most bytes past its start that matching can look at: a
    lookahead looks from where it stands, so it counts from there, not on top of what follows it."""
    consumed = furthest = 0
    for op, av in items:
        if op in _CHARS:
            width, look = 1, 1
        elif op in _REPEATS:
            most = _repeat_max(av[1], cap)
            sub_width, sub_look = _reach(av[2], cap)
            width, look = most * sub_width, ((most - 1) * sub_width + sub_look if most else 0)
        elif op is sre.BRANCH:
            reaches = [_reach(alt, cap) for alt in av[1]]
            width, look = max(r[0] for r in reaches), max(r[1] for r in reaches)
        elif op in (sre.SUBPATTERN, sre.ATOMIC_GROUP):
            width, look = _reach(_children(op, av)[0], cap)
        elif op in (sre.ASSERT, sre.ASSERT_NOT) and av[0] > 0:
            width, look = 0, _reach(av[1], cap)[1]
        else:
            width, look = 0, 0
        furthest = max(furthest, consumed + look)
        consumed += width
    return consumed, max(furthest, consumed)


def _lookbehind(items: Iterable[Any]) -> int:
    """Most bytes before the start that matching can look at (\\b and ^ look at one)."""
    widest = 1
    for op, av in _walk(items):
        if op in (sre.ASSERT, sre.ASSERT_NOT) and av[0] < 0:
            widest = max(widest, _width(av[1], cap=False))
    return widest


def _repeat_max(high: int, cap: bool) -> int:
    if high == sre.MAXREPEAT:
        if not cap:
            raise UnsupportedPattern("it has an unbounded repetition")
        return REPEAT_CAP
    return int(high)


class _Emitter:
    """Writes a parse tree back as regex source: the exact pattern, or its undecided-at-end form."""

    def __init__(self, groups: dict[int, str], cap: bool) -> None:
        self.groups = groups
        self.cap = cap

    def full(self, items: Iterable[Any], capture: bool) -> bytes:
        return b"".join(self._full_item(op, av, capture) for op, av in items)

    def undecided(self, items: list[Any]) -> bytes:
        """Matches at s iff a path from s looks at the end of the buffer.

        For a sequence x1 x2 ... that is: x1 looks at the end, or x1 matches fully and the rest does.
        """
        if not items:
            return FAIL
        (op, av), rest = items[0], items[1:]
        head = self._undecided_item(op, av)
        if not rest:
            return head
        return b"(?:" + head + b"|" + self._full_item(op, av, False) + self.undecided(rest) + b")"

    def _full_item(self, op: Any, av: Any, capture: bool) -> bytes:
        if op is sre.LITERAL:
            return _byte(av)
        if op is sre.NOT_LITERAL:
            return b"[^" + _byte(av) + b"]"
        if op is sre.ANY:
            return b"."
        if op is sre.IN:
            return _char_class(av)
        if op in _REPEATS:
            low, high, sub = av
            suffix = {sre.MIN_REPEAT: b"?", sre.POSSESSIVE_REPEAT: b"+"}.get(op, b"")
            return b"(?:" + self.full(sub, capture) + b")" + _bounds(low, high, self.cap) + suffix
        if op is sre.SUBPATTERN:
            group, add, remove, sub = av
            name = self.groups.get(group) if capture and group else None
            if name:
                opening = b"(?P<" + name.encode() + b">"
            elif capture and group:
                opening = b"("
            else:
                opening = b"(?:"
            return _scoped(add, remove, opening + self.full(sub, capture) + b")")
        if op is sre.ATOMIC_GROUP:
            return b"(?>" + self.full(av, capture) + b")"
        if op is sre.BRANCH:
            return b"(?:" + b"|".join(self.full(alt, capture) for alt in av[1]) + b")"
        if op is sre.AT:
            return _ASSERTIONS[av]
        if op in (sre.ASSERT, sre.ASSERT_NOT):
            direction, sub = av
            kind = (b"=" if op is sre.ASSERT else b"!") if direction > 0 else (b"<=" if op is sre.ASSERT else b"<!")
            return b"(?" + kind + self.full(sub, capture) + b")"
        raise UnsupportedPattern(f"unsupported regex construct {op}")

    def _undecided_item(self, op: Any, av: Any) -> bytes:
        if op in _CHARS:
            return AT_END
        if op in _REPEATS:
            _, high, sub = av
            if high == 0:
                return FAIL
            # some full repetitions (fewer than the most allowed), then one that looks at the end
            most = REPEAT_CAP if high == sre.MAXREPEAT and self.cap else high
            before = b"*" if most == sre.MAXREPEAT else b"{0," + str(most - 1).encode() + b"}"
            return b"(?:(?:" + self.full(sub, False) + b")" + before + self.undecided(list(sub)) + b")"
        if op is sre.SUBPATTERN:
            return _scoped(av[1], av[2], b"(?:" + self.undecided(list(av[3])) + b")")
        if op is sre.ATOMIC_GROUP:
            return b"(?:" + self.undecided(list(av)) + b")"
        if op is sre.BRANCH:
            return b"(?:" + b"|".join(self.undecided(list(alt)) for alt in av[1]) + b")"
        if op is sre.AT:
            return _UNDECIDED_AT_END.get(av, FAIL)
        if op in (sre.ASSERT, sre.ASSERT_NOT):
            direction, sub = av
            return b"(?=" + self.undecided(list(sub)) + b")" if direction > 0 else FAIL
        raise UnsupportedPattern(f"unsupported regex construct {op}")


def _byte(code: int) -> bytes:
    return b"\\x%02x" % code


def _char_class(items: list[tuple[Any, Any]]) -> bytes:
    parts = []
    for op, av in items:
        if op is sre.NEGATE:
            parts.append(b"^")
        elif op is sre.LITERAL:
            parts.append(_byte(av))
        elif op is sre.RANGE:
            parts.append(_byte(av[0]) + b"-" + _byte(av[1]))
        elif op is sre.CATEGORY and av in _CATEGORIES:
            parts.append(_CATEGORIES[av])
        else:
            raise UnsupportedPattern(f"unsupported character class item {op} {av}")
    return b"[" + b"".join(parts) + b"]"


def _bounds(low: int, high: int, cap: bool) -> bytes:
    if high == sre.MAXREPEAT:
        if cap:
            return b"{%d,%d}" % (low, max(low, REPEAT_CAP))
        return b"{%d,}" % low
    return b"{%d,%d}" % (low, high)


def _scoped(add: int, remove: int, body: bytes) -> bytes:
    on = "".join(letter for flag, letter in _FLAG_LETTERS if add & flag)
    off = "".join(letter for flag, letter in _FLAG_LETTERS if remove & flag)
    if not on and not off:
        return body
    return b"(?" + (on + ("-" + off if off else "")).encode() + b":" + body + b")"
