"""A shell command line -> the simple commands it would run, for policy matching; pure.

A guardrail, not a shell (docs/design/0005-control.md): it splits on `;`, `&&`, `||`, `|`, `&`, newlines and
subshell parentheses, looks inside `$(...)`, `<(...)` and backticks, and splits words like a POSIX
shell (shlex). It does not expand variables, aliases or globs, so a determined user can hide a
program name (`$X`, `$'\\x72m'`); policy can forbid shells where that matters. Quoting it cannot
parse does not raise: the line is split on operator characters and whitespace instead.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass

__all__ = ["REDIRECT", "SHELLS", "CommandLine", "SimpleCommand", "parse"]

_MAX_DEPTH = 16  # nested substitutions / sh -c scripts; deeper lines are split loosely
_SEPARATORS = ";&|\n()"
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\[[^\]]*\])?\+?=")
REDIRECT = re.compile(r"\d*(>>?|<<?<?|&>>?|>&|<&|>\||<>)")  # a redirection operator (group 1), at a word's start
_REDIRECT_WITH_TARGET = re.compile(r"\d*(>>?|<<?<?|&>>?|>&|<&|>\||<>)\S")
# Words that may precede a command without being one; their segment's command follows them.
_RESERVED = frozenset({"!", "{", "}", "if", "then", "else", "elif", "fi", "do", "done", "while", "until", "esac"})
# Segments that are loop or case headers, not commands (`for f in *`, `case $x in`).
_HEADERS = frozenset({"for", "select", "case"})
# Programs that run another program from their arguments: name -> options that take a value.
_WRAPPERS: dict[str, frozenset[str]] = {
    "sudo": frozenset({"-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U", "-T", "--user", "--group"}),
    "doas": frozenset({"-u", "-C"}),
    "env": frozenset({"-u", "-C", "-S", "--unset", "--chdir", "--split-string"}),
    "nice": frozenset({"-n", "--adjustment"}),
    "ionice": frozenset({"-c", "-n", "-p", "-t"}),
    "nohup": frozenset(),
    "exec": frozenset({"-a"}),
    "command": frozenset(),
    "builtin": frozenset(),
    "time": frozenset({"-f", "-o", "--format", "--output"}),
    "timeout": frozenset({"-s", "-k", "--signal", "--kill-after"}),
    "stdbuf": frozenset({"-i", "-o", "-e"}),
    "chroot": frozenset({"--userspec", "--groups"}),
    "setsid": frozenset(),
    "xargs": frozenset({"-a", "-d", "-E", "-I", "-L", "-n", "-P", "-s", "--arg-file", "--delimiter"}),
    "watch": frozenset({"-n", "-d", "--interval"}),
    "strace": frozenset({"-e", "-o", "-p", "-s", "-u"}),
}
_WRAPPER_POSITIONALS = {"timeout": 1, "chroot": 1}  # words between the options and the wrapped program
# Programs that are shells: their `-c` code is a command line of its own (here), and run alone they are an
# interactive shell (shell-line gating). The one list of shell names.
SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "fish", "busybox", "tcsh", "csh"})


class _Unparseable(Exception):
    """Quoting or parentheses that do not close."""


@dataclass(frozen=True)
class SimpleCommand:
    """One command that runs: its words after leading assignments, redirections and reserved words."""

    words: tuple[str, ...]
    prefix: tuple[str, ...] = ()  # the `VAR=value` assignments that came before it

    @property
    def program(self) -> str:
        return self.words[0]

    def candidates(self) -> tuple[str, ...]:
        """What a pattern is tried on: the command, its program, and both with the program's basename."""
        words = self.words
        found = [" ".join(words), words[0]]
        base = posixpath.basename(words[0])
        if base and base != words[0]:
            found += [" ".join((base, *words[1:])), base]
        if self.prefix:
            found.append(" ".join((*self.prefix, *words)))
        return tuple(dict.fromkeys(found))


@dataclass(frozen=True)
class CommandLine:
    """A parsed line: the commands it runs, and the commands those run in turn (sudo X, sh -c "X")."""

    text: str
    commands: tuple[SimpleCommand, ...]  # top level and substitutions: all of them run
    wrapped: tuple[SimpleCommand, ...]  # run by a command above (sudo, env, xargs, sh -c, eval, find -exec)
    exact: bool  # False: the quoting did not parse and the words were split on whitespace

    @property
    def all_commands(self) -> tuple[SimpleCommand, ...]:
        return self.commands + self.wrapped


def parse(text: str, _depth: int = 0) -> CommandLine:
    """Split a command line into the simple commands it runs; never raises."""
    try:
        commands, exact = _parse_exact(text, _depth), True
    except _Unparseable:
        commands, exact = _parse_loose(text), False
    wrapped: list[SimpleCommand] = []
    for command in commands:
        wrapped += _unwrap(command, _depth)
    return CommandLine(text, tuple(commands), tuple(wrapped), exact)


def _parse_exact(text: str, depth: int) -> list[SimpleCommand]:
    if depth > _MAX_DEPTH:
        raise _Unparseable
    segments, substitutions = _split(text)
    commands = [c for c in (_simple(_words(s)) for s in segments) if c is not None]
    for inner in substitutions:
        commands += _parse_exact(inner, depth + 1)
    return commands


def _parse_loose(text: str) -> list[SimpleCommand]:
    commands = []
    for piece in re.split(r"[;&|\n()`]|\$\(", text):
        words = [w for w in (re.sub(r"['\"\\]", "", w) for w in piece.split()) if w]
        command = _simple(words)
        if command is not None:
            commands.append(command)
    return commands


def _words(segment: str) -> list[str]:
    try:
        return shlex.split(segment)
    except ValueError:  # e.g. a trailing backslash
        raise _Unparseable from None


def _simple(words: list[str]) -> SimpleCommand | None:
    index, prefix = 0, []
    while index < len(words):
        word = words[index]
        if _ASSIGNMENT.match(word):
            prefix.append(word)
        elif REDIRECT.fullmatch(word) or word == "function":
            index += 1  # and its target, or the function's name: `function f { rm -rf /; }`
        elif not (word in _RESERVED or _REDIRECT_WITH_TARGET.match(word)):
            break
        index += 1
    rest = tuple(words[index:])
    if not rest or rest[0] in _HEADERS:
        return None
    return SimpleCommand(rest, tuple(prefix))


def _split(text: str) -> tuple[list[str], list[str]]:
    """Top-level segments between operators, and the bodies of command substitutions."""
    segments: list[str] = []
    substitutions: list[str] = []
    current: list[str] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        last = current[-1][-1:] if current else ""
        if char == "\\":
            current.append(text[i : i + 2])
            i += 2
        elif char == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise _Unparseable
            current.append(text[i : end + 1])
            i = end + 1
        elif char == '"':
            end = _end_of_double_quote(text, i + 1, substitutions)
            current.append(text[i : end + 1])
            i = end + 1
        elif char == "`" or (char in "$<>" and text.startswith("(", i + 1)):
            end = _end_of_substitution(text, i, substitutions)
            current.append(text[i : end + 1])
            i = end + 1
        elif char == "#" and last in ("", " ", "\t"):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif char in _SEPARATORS and not _is_redirect_part(char, last, text[i + 1 : i + 2]):
            segments.append("".join(current))
            current = []
            i += 1
        else:
            current.append(char)
            i += 1
    segments.append("".join(current))
    return [s for s in segments if s.strip()], substitutions


def _is_redirect_part(char: str, last: str, following: str) -> bool:
    """`2>&1`, `&>file`, `>|file`: an `&` or `|` that belongs to a redirection, not a list operator."""
    if char == "&":
        return last in ("<", ">") or following == ">"
    return char == "|" and last == ">"


def _end_of_substitution(text: str, start: int, substitutions: list[str]) -> int:
    """`$(...)`, `<(...)`, `>(...)`, `` `...` `` or `$((...))` at start: index of its last character."""
    if text[start] == "`":
        end = start + 1
        while end < len(text) and text[end] != "`":
            end += 2 if text[end] == "\\" else 1
        if end >= len(text):
            raise _Unparseable
        substitutions.append(text[start + 1 : end].replace("\\`", "`"))
        return end
    end = _matching_paren(text, start + 1)
    if not text.startswith("$((", start):  # arithmetic runs nothing
        substitutions.append(text[start + 2 : end])
    return end


def _end_of_double_quote(text: str, start: int, substitutions: list[str]) -> int:
    i = start
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
        elif char == '"':
            return i
        elif char == "`" or (char == "$" and text.startswith("(", i + 1)):
            i = _end_of_substitution(text, i, substitutions) + 1
        else:
            i += 1
    raise _Unparseable


def _matching_paren(text: str, open_index: int) -> int:
    depth, i = 0, open_index
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == "'":
            i = text.find("'", i + 1)
            if i < 0:
                raise _Unparseable
        elif char == '"':
            i = _end_of_double_quote(text, i + 1, [])
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise _Unparseable


def _unwrap(command: SimpleCommand, depth: int) -> list[SimpleCommand]:
    """The commands a command runs from its arguments, recursively."""
    if depth > _MAX_DEPTH:
        return []
    name = posixpath.basename(command.program)
    inner: list[SimpleCommand] = []
    if name in SHELLS:
        script = _shell_script(command.words)
        if script is not None:
            inner = list(parse(script, depth + 1).all_commands)
    elif name == "eval":
        inner = list(parse(" ".join(command.words[1:]), depth + 1).all_commands)
    elif name == "find":
        inner = _find_exec(command.words)
    elif name in _WRAPPERS:
        wrapped = _simple(_after_options(command.words, _WRAPPERS[name], _WRAPPER_POSITIONALS.get(name, 0)))
        inner = [wrapped] if wrapped is not None else []
    for found in list(inner):
        inner += _unwrap(found, depth + 1)
    return inner


def _after_options(words: tuple[str, ...], takes_value: frozenset[str], positionals: int) -> list[str]:
    index = 1
    while index < len(words) and words[index].startswith("-") and len(words[index]) > 1:
        if words[index] == "--":
            index += 1
            break
        index += 2 if words[index] in takes_value else 1
    return list(words[index + positionals :])


def _shell_script(words: tuple[str, ...]) -> str | None:
    """The script of `sh -c SCRIPT` (also `bash -lc`, `sh -e -c`)."""
    saw_c = False
    for word in words[1:]:
        if word.startswith("-") and not word.startswith("--"):
            saw_c = saw_c or "c" in word[1:]
        elif word.startswith("--"):
            continue
        else:
            return word if saw_c else None
    return None


def _find_exec(words: tuple[str, ...]) -> list[SimpleCommand]:
    found = []
    for index, word in enumerate(words):
        if word in ("-exec", "-execdir", "-ok", "-okdir"):
            rest = list(words[index + 1 :])
            end = next((i for i, w in enumerate(rest) if w in (";", "+")), len(rest))
            command = _simple(rest[:end])
            if command is not None:
                found.append(command)
    return found
