"""Which command lines are opaque: the parser cannot tell which programs they run; pure.

A deny list over command text can never be complete: `echo reboot | sh`, `python3 -c 'os.system(…)'`,
`re\\<newline>boot`, `$CMD`. So policy fails closed on them (policy.py): a line is opaque when it hands
code to a shell or an interpreter (`sh -c`, `python3 -c`, `perl -e`, a shell or interpreter reading its
program from its input, a pipe, a here-string or a process substitution), runs `eval`, `source`, `trap`,
`coproc` or defines names for later lines (`alias`, `hash -p`, `bind -x`), continues over a
backslash-newline, chooses its program by an expansion (`$X`, `` `…` ``, globs, braces), changes where
programs come from (`PATH=`, `LD_PRELOAD=`, `BASH_ENV=`…), or does not parse. A named program running
its own file (`python3 script.py`, `bash deploy.sh`) is visible as that program, not opaque.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re

from bastion.control.command_line import REDIRECT, SHELLS, CommandLine, SimpleCommand

__all__ = ["INTERPRETERS", "why_opaque"]

# Interpreters, and the options that hand them code on the command line.
INTERPRETERS: dict[str, frozenset[str]] = {
    "python*": frozenset({"-c"}),
    "pypy*": frozenset({"-c"}),
    "perl*": frozenset({"-e", "-E"}),
    "ruby*": frozenset({"-e"}),
    "irb": frozenset(),
    "node*": frozenset({"-e", "--eval", "-p", "--print"}),
    "deno": frozenset({"eval"}),
    "bun": frozenset({"-e", "--eval"}),
    "php*": frozenset({"-r"}),
    "lua*": frozenset({"-e"}),
    "luajit": frozenset({"-e"}),
    "tclsh*": frozenset(),
    "wish*": frozenset(),
    "expect": frozenset({"-c"}),
    "Rscript": frozenset({"-e"}),
    "R": frozenset({"-e"}),
    "pwsh": frozenset({"-c", "-command", "-Command", "-e", "-EncodedCommand"}),
    "osascript": frozenset({"-e"}),
    "jshell": frozenset(),
    "ghci": frozenset({"-e"}),
    "julia": frozenset({"-e", "--eval"}),
    "gdb": frozenset({"-ex", "--eval-command", "-batch"}),
}
# awk runs the program text given as its first argument (unless -f names a file); its system() runs anything.
AWKS = frozenset({"awk", "gawk", "mawk", "nawk", "busybox-awk"})
# Builtins that run code they are given, or define names that later lines run.
RUNS_CODE = {
    "eval": "eval runs its arguments as a command line",
    "source": "source runs a file's commands in this shell",
    ".": "`.` runs a file's commands in this shell",
    "trap": "trap runs code when a signal or event comes",
    "coproc": "coproc runs a command in the background",
    "alias": "alias makes a name run other commands in later lines",
    "bind": "bind can make a key run a command",
    "enable": "enable can load builtins from a file",
}
# Variables that change which program or code runs (in a prefix `VAR=… cmd` or an export).
RISKY_VARIABLES = frozenset(
    {"PATH", "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "BASH_ENV", "ENV", "PROMPT_COMMAND", "IFS", "PYTHONPATH",
     "PYTHONSTARTUP", "PERL5LIB", "PERL5OPT", "RUBYOPT", "NODE_OPTIONS", "BASH_FUNC_*", "SHELLOPTS", "BASHOPTS",
     "PS0", "PS1", "PS2", "PS4", "INPUTRC"}
)  # fmt: skip
# In command position: a parameter or command substitution, a glob (`*`, `?`, `[…]`), a brace expansion, or
# `{}` (the placeholder xargs -I and find -exec fill in).
_EXPANSION = re.compile(r"[$`*?]|\[.*\]|\{.*\}")
_ASSIGNMENT = re.compile(r"(?:^|[\s;&|(])([A-Za-z_][A-Za-z0-9_]*)\+?=")
_SCRIPT_FROM_A_STREAM = ("<(", ">(", "/dev/stdin", "/dev/fd/", "/proc/self/fd/", "/dev/tcp/", "/dev/udp/")
_DECLARES = frozenset({"export", "declare", "typeset", "local", "readonly"})
# Options whose value is the next word (so it is not taken for the script's name).
_SHELL_VALUES = frozenset({"-o", "+o", "-O", "+O", "--rcfile", "--init-file"})
_TAKES_VALUE: dict[str, frozenset[str]] = {
    **dict.fromkeys(SHELLS, _SHELL_VALUES),
    "python": frozenset({"-W", "-X", "-Q"}),
    "node": frozenset({"-r", "--require", "--loader", "--import"}),
    "ruby": frozenset({"-I", "-r", "-C"}),
    "": frozenset(),
}


def why_opaque(line: CommandLine, interactive: bool = False) -> tuple[str, ...]:
    """Why the programs this line runs cannot be told from its text (empty: they can). `interactive`: a line
    typed in a shell, where history expansion (`!!`, `!-2`, `^old^new`) runs text the line does not show."""
    reasons: list[str] = []
    if interactive and _history_designator(line.text):
        reasons.append("history expansion (!…, ^…^) runs an earlier line that this one does not show")
    if not line.exact:
        reasons.append("its quoting or parentheses do not parse")
    if "\\\n" in line.text or "\\\r\n" in line.text:
        reasons.append("it continues over a backslash-newline")
    if not line.commands:  # assignments only (`PS1='$(…)'`): nothing runs now, something may later
        reasons += [f"it sets {name}, which changes what runs" for name in _risky_assignments(
            [f"{match.group(1)}=" for match in _ASSIGNMENT.finditer(line.text)])]  # fmt: skip
    for command in line.all_commands:
        reasons += _command(command)
    return tuple(dict.fromkeys(reasons))


def _command(command: SimpleCommand) -> list[str]:
    reasons = [f"it sets {name}, which changes what runs" for name in _risky_assignments(command.prefix)]
    program = command.program
    name = posixpath.basename(program)
    if _EXPANSION.search(program):
        reasons.append(f"its program {program!r} is chosen when it runs (an expansion)")
        return reasons
    if name in RUNS_CODE:
        reasons.append(RUNS_CODE[name])
    elif name == "hash" and "-p" in command.words[1:]:
        reasons.append("hash -p makes a name run another program in later lines")
    elif name in _DECLARES:
        assigned = [word for word in command.words[1:] if "=" in word and not word.startswith("-")]
        reasons += [f"it sets {variable}, which changes what runs" for variable in _risky_assignments(assigned)]
        if any(word.startswith("-") and "f" in word for word in command.words[1:]) and name != "local":
            reasons.append(f"{name} -f can define functions that later lines run")
    elif name in SHELLS:
        reasons += _interpreter(name, command.words, frozenset({"-c"}), short_flags=True)
    elif name in AWKS:
        if "-f" not in command.words[1:]:
            reasons.append(f"{name} runs the program text it is given (its system() runs anything)")
    else:
        flags = next((f for pattern, f in INTERPRETERS.items() if fnmatch.fnmatchcase(name, pattern)), None)
        if flags is not None:
            reasons += _interpreter(name, command.words, flags, short_flags=False)
    return reasons


def _interpreter(name: str, words: tuple[str, ...], code_flags: frozenset[str], short_flags: bool) -> list[str]:
    """A shell or interpreter: opaque when handed code, or when it reads its program from a stream."""
    letters = {flag[1] for flag in code_flags if len(flag) == 2 and flag[0] == "-"}
    takes_value = _TAKES_VALUE.get(name, _TAKES_VALUE["python" if name.startswith("python") else ""])
    index = 1
    while index < len(words):
        word = words[index]
        cluster = word.startswith(("-", "+")) and not word.startswith("--") and len(word) > 1
        grouped = cluster and word[0] == "-" and (short_flags or len(word) > 2) and bool(letters & set(word[1:]))
        if word in code_flags or grouped:
            return [f"{name} {word} runs code given on the command line"]
        redirect = REDIRECT.match(word)
        if redirect:
            if "<" in redirect.group(1) and not redirect.group(1).endswith(("<&", "<>")):
                return [f"{name} runs code from a redirection ({word})"]
            index += 1 if len(word) > len(redirect.group(0)) else 2
            continue
        if word == "-m" and name.startswith("python"):
            return []  # a named module: visible as that module's program
        if word == "--":
            index += 1
            break
        if word in takes_value:
            index += 2
            continue
        if cluster or word.startswith("--"):
            index += 1
            continue
        break
    script = words[index] if index < len(words) else None
    if script is None or script == "-":
        return [f"{name} runs the code it reads from its input (a pipe, a here-string, or the terminal)"]
    if script.startswith(_SCRIPT_FROM_A_STREAM):
        return [f"{name} runs code from {script!r}, a stream rather than a file"]
    return []


def _history_designator(text: str) -> bool:
    """An unquoted (or double-quoted) `!` that bash's history expansion would take, or a leading `^`."""
    if text.lstrip().startswith("^"):
        return True
    single = False
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\" and not single:
            index += 2
            continue
        if char == "'":
            single = not single
        elif char == "!" and not single:
            following = text[index + 1 : index + 2]
            if following and following not in " \t\n=(\"":
                return True
        index += 1
    return False


def _risky_assignments(words: tuple[str, ...] | list[str]) -> list[str]:
    names = [word.split("=", 1)[0].rstrip("+") for word in words]
    return [name for name in names if any(fnmatch.fnmatchcase(name, risky) for risky in RISKY_VARIABLES)]
