"""Patterns in rules: globs or `re:<regex>` matched against the whole text, host label matches, port ranges; pure."""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Callable, Mapping

__all__ = ["host_matcher", "matcher", "port_range", "validate_patterns"]


@functools.lru_cache(maxsize=4096)
def matcher(pattern: str) -> Callable[[str], bool]:
    """A glob or `re:<regex>`, matched against the whole text; raises ValueError in one line."""
    if pattern.startswith("re:"):
        try:
            compiled = re.compile(pattern[3:])
        except re.error as exc:
            raise ValueError(f"expected a valid regular expression after 're:', got {pattern!r}: {exc}") from None
    else:
        compiled = re.compile(fnmatch.translate(pattern))
    return lambda text: compiled.fullmatch(text) is not None


def validate_patterns(values: tuple[str, ...], what: str) -> tuple[str, ...]:
    """The patterns, if each is non-empty and compiles; else ValueError naming what they match."""
    for value in values:
        if not value:
            raise ValueError(f"expected {what} patterns such as 'rm *' or 're:^rm\\b.*', got an empty string")
        matcher(value)
    return values


def host_matcher(pattern: str) -> Callable[[str, Mapping[str, str]], bool]:
    """A host name pattern, or `key=value[,key=value]` label matches that must all hold."""
    if "=" not in pattern:
        name = matcher(pattern)
        return lambda host, labels: name(host)
    wanted = []
    for part in pattern.split(","):
        key, _, value = part.partition("=")
        wanted.append((key.strip(), matcher(value.strip())))
    return lambda host, labels: all(k in labels and m(labels[k]) for k, m in wanted)


def port_range(entry: int | str) -> tuple[int, int]:
    """8000, "8000-8100" or "*" (as validated by the rule) -> (low, high)."""
    if entry == "*":
        return 1, 65535
    low, _, high = str(entry).partition("-")
    return int(low), int(high or low)
