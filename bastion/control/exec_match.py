"""Structured exec patterns: a program, options that must be present in any spelling, and arguments; pure.

A text pattern such as `rm -rf /` matches that text only; `rm -fr /`, `rm -r -f /` and
`rm --recursive --force /` run the same command. An `ExecPattern`, written in bastion.toml as an
inline table inside a rule's `exec` list, matches them all:

    exec = ["ls *", { program = "rm", options = ["-r|-R|--recursive", "-f|--force"], args = ["/"] }]

It is matched against one simple command's words (`SimpleCommand.words` from command_line.py, program
first) by `matches`:

* `program`: a glob matched against the program word and against its basename (`rm` matches `/bin/rm`;
  `/usr/sbin/reboot` matches that path only).
* `options`: each entry must be present, in any order and grouping. An entry is one option, with
  alternatives joined by `|` (`-r|-R|--recursive`). Short options count grouped or apart (`-rf`, `-fr`,
  `-rfv`, `-r -f`); `--force=VALUE` counts as `--force`; words after a lone `--`, and a lone `-`, are
  arguments, not options.
* `args`: globs; each must match at least one argument (a word that is not an option).

Options or arguments beyond those listed do not prevent a match: the pattern says what a command has
at least, so a deny rule for `rm -r -f /` also catches `rm -rfv / --no-preserve-root`.

Like command_line.py this is a guardrail, not a parser of every program's options. It does not know
which options take a value, so it errs towards a match: the value in `-ofile` counts as short options
(`-o -f -i -l -e`) and the value in `-o file` counts as an argument. It does not expand GNU long-option
abbreviations (`--recur` for `--recursive`): list such spellings as alternatives where they matter.
Single-dash long options (`find -delete`) cannot be listed, because `-delete` reads as grouped short
options; use a text pattern for those.
"""

from __future__ import annotations

import fnmatch
import functools
import posixpath
import re
from collections.abc import Callable, Sequence

from pydantic import field_validator

from bastion.config_types import Section

__all__ = ["ExecPattern", "matches"]

_SHORT = re.compile(r"-[^-\s|=]")
_LONG = re.compile(r"--[^-\s|=][^\s|=]*")


class ExecPattern(Section):
    """One structured `exec` entry: `{ program = "rm", options = ["-r|--recursive"], args = ["/"] }`."""

    program: str
    options: tuple[str, ...] = ()
    args: tuple[str, ...] = ()

    @field_validator("program")
    @classmethod
    def _program(cls, value: str) -> str:
        if not value or value.split() != [value]:
            raise ValueError(
                "expected a program name or glob such as 'rm', 'python3*' or '/usr/sbin/reboot'"
                f" (options and arguments go in options and args), got {value!r}"
            )
        return value

    @field_validator("options")
    @classmethod
    def _options(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            _alternatives(entry)  # raises ValueError in one line
        return value

    @field_validator("args")
    @classmethod
    def _args(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            if not entry:
                raise ValueError("expected argument globs such as '/' or '/etc/*', got an empty string")
        return value

    def describe(self) -> str:
        """The pattern in one line, as a command would read: `rm -r|-R|--recursive -f|--force /`."""
        return " ".join((self.program, *self.options, *self.args))


def matches(pattern: ExecPattern, words: Sequence[str]) -> bool:
    """Whether the simple command `words` (program first) has the pattern's program, options and args."""
    if not words or not _program_matches(pattern.program, words[0]):
        return False
    options, positionals = _split(words[1:])
    if not all(_alternatives(entry) & options for entry in pattern.options):
        return False
    return all(any(_glob(arg)(word) for word in positionals) for arg in pattern.args)


def _program_matches(pattern: str, program: str) -> bool:
    glob = _glob(pattern)
    if glob(program):
        return True
    base = posixpath.basename(program)
    return bool(base) and base != program and glob(base)


def _split(words: Sequence[str]) -> tuple[frozenset[str], tuple[str, ...]]:
    """The options the words contain (`-r`, `--force`) and their positional words, in order."""
    options: set[str] = set()
    positionals: list[str] = []
    ended = False
    for word in words:
        if ended or word == "-" or not word.startswith("-"):
            positionals.append(word)
        elif word == "--":
            ended = True
        elif word.startswith("--"):
            options.add(word.partition("=")[0])
        else:
            options.update(f"-{letter}" for letter in word[1:])
    return frozenset(options), tuple(positionals)


@functools.lru_cache(maxsize=4096)
def _alternatives(entry: str) -> frozenset[str]:
    """'-r|-R|--recursive' -> its options; raises ValueError in one line saying what is expected."""
    found = set()
    for alternative in entry.split("|"):
        if _SHORT.fullmatch(alternative) or _LONG.fullmatch(alternative):
            found.add(alternative)
        elif alternative.startswith("--") and "=" in alternative:
            raise ValueError(
                f"expected an option name without a value such as {alternative.partition('=')[0]!r}"
                f" (it also matches '--name=VALUE'), got {entry!r}"
            )
        elif re.fullmatch(r"-[^-\s|=]{2,}", alternative):
            letters = ", ".join(repr(f"-{letter}") for letter in alternative[1:])
            raise ValueError(
                f"expected one option per entry such as '-r' or '--recursive', got {entry!r};"
                f" list grouped short options as separate entries: {letters}"
            )
        else:
            raise ValueError(f"expected options such as '-r' or '-r|--recursive', got {entry!r}")
    return frozenset(found)


@functools.lru_cache(maxsize=4096)
def _glob(pattern: str) -> Callable[[str], bool]:
    """A compiled glob with `fnmatch.fnmatchcase` semantics (case-sensitive, `*` also matches '/')."""
    compiled = re.compile(fnmatch.translate(pattern))
    return lambda text: compiled.match(text) is not None
