"""Structured exec patterns (bastion/control/exec_match.py): spellings of the same options, validation, TOML."""

from __future__ import annotations

import shlex
import tomllib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from bastion.control.exec_match import ExecPattern, matches

RM_RF_ROOT = ExecPattern(program="rm", options=("-r|-R|--recursive", "-f|--force"), args=("/",))


def words(command: str) -> list[str]:
    return shlex.split(command)


@pytest.mark.parametrize(
    "command",
    [
        "rm -rf /",
        "rm -fr /",
        "rm -r -f /",
        "rm -f -r /",
        "rm -R -f /",
        "rm -Rf /",
        "/bin/rm --recursive --force /",
        "rm --force --recursive /",
        "rm -rfv / --no-preserve-root",
        "rm / -rf",
        "rm -r /tmp/x -f /",
        "rm -r --force=yes /",
        "rm -i -v -r -f /",
        "rm -rf -- /",
    ],
)
def test_spellings_of_rm_rf_root_match(command: str) -> None:
    assert matches(RM_RF_ROOT, words(command))


@pytest.mark.parametrize(
    "command",
    [
        "rm -r /",  # no -f
        "rm -f /",  # no -r
        "rm -rf /tmp/x",  # not /
        "rm -rf",  # no argument
        "rm -- -rf /x",  # after --, -rf is a file name
        "rm -r -- -f /",  # -f is a file name here
        "rmdir -rf /",
        "xrm -rf /",
        "/bin/rm-safe -rf /",
        "rm --recursive-ish --force /",
        "rm -rf //",
        "",
    ],
)
def test_other_commands_do_not_match(command: str) -> None:
    assert not matches(RM_RF_ROOT, words(command))


def test_the_program_is_matched_on_the_word_and_its_basename() -> None:
    assert matches(ExecPattern(program="rm"), ["/bin/rm"])
    assert matches(ExecPattern(program="rm"), ["./rm"])
    assert matches(ExecPattern(program="/usr/sbin/reboot"), ["/usr/sbin/reboot"])
    assert not matches(ExecPattern(program="/usr/sbin/reboot"), ["reboot"])
    assert not matches(ExecPattern(program="/usr/sbin/reboot"), ["/sbin/reboot"])
    assert not matches(ExecPattern(program="rm"), ["RM"])  # case-sensitive, like the shell
    assert not matches(ExecPattern(program="rm"), ["/bin/"])


def test_program_globs() -> None:
    python = ExecPattern(program="python3*", options=("-c",))
    assert matches(python, ["python3", "-c", "print(1)"])
    assert matches(python, ["python3.12", "-Sc", "print(1)"])
    assert matches(python, ["/usr/bin/python3.11", "-c", "x"])
    assert not matches(python, ["python2", "-c", "x"])
    assert not matches(python, ["python3", "script.py"])
    assert matches(ExecPattern(program="*/sbin/*"), ["/usr/sbin/reboot"])
    assert matches(ExecPattern(program="systemctl"), ["systemctl", "stop", "sshd"])
    assert matches(ExecPattern(program="*"), ["anything", "--at-all"])


def test_long_options_with_values_count_as_the_option() -> None:
    force = ExecPattern(program="rm", options=("--force",))
    assert matches(force, ["rm", "--force", "x"])
    assert matches(force, ["rm", "--force=yes", "x"])
    assert matches(force, ["rm", "--force="])
    assert not matches(force, ["rm", "--forced", "x"])
    assert not matches(force, ["rm", "-f", "x"])  # only the listed spellings count
    push = ExecPattern(program="git", options=("--force|-f",), args=("push",))
    assert matches(push, ["git", "push", "--force", "origin", "main"])
    assert matches(push, ["git", "push", "-fu", "origin", "main"])
    assert not matches(push, ["git", "push", "--force-with-lease", "origin"])
    assert not matches(push, ["git", "pull", "--force"])


def test_lone_dash_and_double_dash_are_not_options() -> None:
    stdin = ExecPattern(program="cat", args=("-",))
    assert matches(stdin, ["cat", "-"])
    assert not matches(stdin, ["cat", "-n"])
    assert matches(ExecPattern(program="rm", args=("--",)), ["rm", "--", "--"])  # the second is a file
    assert not matches(ExecPattern(program="rm", args=("--",)), ["rm", "--"])
    dash_rf = ExecPattern(program="rm", args=("-rf",))
    assert matches(dash_rf, ["rm", "--", "-rf"])
    assert not matches(dash_rf, ["rm", "-rf"])


def test_args_are_globs_and_each_must_match_some_argument() -> None:
    pattern = ExecPattern(program="cp", args=("/etc/*", "/tmp/*"))
    assert matches(pattern, ["cp", "/etc/shadow", "/tmp/x"])
    assert matches(pattern, ["cp", "-a", "/tmp/x", "/etc/shadow"])
    assert not matches(pattern, ["cp", "/etc/shadow", "/var/x"])
    assert not matches(pattern, ["cp", "/etc/shadow"])
    assert matches(ExecPattern(program="ls"), ["ls"])  # nothing listed: the program is enough


def test_options_alone() -> None:
    pattern = ExecPattern(program="tar", options=("-x|--extract", "-f|--file"))
    assert matches(pattern, ["tar", "-xzf", "a.tar.gz"])
    assert matches(pattern, ["tar", "--extract", "--file=a.tar"])
    assert not matches(pattern, ["tar", "-czf", "a.tar.gz", "."])


def test_describe() -> None:
    assert RM_RF_ROOT.describe() == "rm -r|-R|--recursive -f|--force /"
    assert ExecPattern(program="reboot").describe() == "reboot"
    assert ExecPattern(program="cat", args=("/etc/shadow",)).describe() == "cat /etc/shadow"


def _is_group(word: str) -> bool:
    """A word of short options: `-rf`, not `-`, `--`, `--force` or a file name."""
    return word.startswith("-") and not word.startswith("--") and word != "-"


_EXTRA_LETTERS = "vidIx"  # rm options that are neither -r nor -f


@st.composite
def rm_rf_root_commands(draw: st.DrawFn) -> list[str]:
    """`rm` with -r/-R and -f plus extra short options, shuffled and grouped at random, `/` anywhere."""
    letters = [draw(st.sampled_from("rR")), "f", *draw(st.lists(st.sampled_from(_EXTRA_LETTERS), max_size=4))]
    letters = draw(st.permutations(letters))
    cuts = sorted(draw(st.sets(st.integers(1, len(letters) - 1), max_size=len(letters) - 1)))
    groups = ["-" + "".join(letters[a:b]) for a, b in zip([0, *cuts], [*cuts, len(letters)], strict=True)]
    others = draw(st.lists(st.sampled_from(["/", "/tmp/x", "--no-preserve-root", "--verbose", "a b"]), max_size=4))
    rest = draw(st.permutations([*groups, "/", *others]))
    return ["rm", *rest]


@given(rm_rf_root_commands())
def test_any_grouping_and_order_of_the_short_options_matches(command: list[str]) -> None:
    assert matches(RM_RF_ROOT, command)


@given(rm_rf_root_commands(), st.data())
def test_without_one_required_option_nothing_matches(command: list[str], data: st.DataObject) -> None:
    dropped = data.draw(st.sampled_from(["rR", "f"]))
    stripped = [word.translate({ord(c): None for c in dropped}) if _is_group(word) else word for word in command]
    stripped = [word for word in stripped if word != "-"]
    assert not matches(RM_RF_ROOT, stripped)


@given(rm_rf_root_commands())
def test_after_a_lone_double_dash_the_options_are_file_names(command: list[str]) -> None:
    assert not matches(RM_RF_ROOT, ["rm", "--", *command[1:]])


@given(st.lists(st.text(alphabet="-rfRv/x=", max_size=6), max_size=6), st.data())
def test_regrouping_short_options_keeps_the_outcome(tail: list[str], data: st.DataObject) -> None:
    """Splitting every short-option group into single options (or joining them) does not change a match."""
    command = ["rm", *tail]
    cut = tail.index("--") if "--" in tail else len(tail)
    before, after = tail[:cut], tail[cut:]
    # the letters of every short-option group (a '-' inside a group stands for no option a pattern can list)
    letters = [c for w in before if _is_group(w) for c in w[1:] if c != "-"]
    kept = [w for w in before if not _is_group(w)]
    single = ["rm", *[f"-{c}" for c in letters], *kept, *after]
    joined = ["rm", *(["-" + "".join(letters)] if letters else []), *kept, *after]
    shuffled = ["rm", *data.draw(st.permutations(single[1:]))]
    for pattern in (RM_RF_ROOT, ExecPattern(program="rm", options=("-v",)), ExecPattern(program="rm", args=("x*",))):
        outcome = matches(pattern, command)
        assert matches(pattern, single) == outcome
        assert matches(pattern, joined) == outcome
        if not after:  # with no `--`, the order of the words does not matter either
            assert matches(pattern, shuffled) == outcome


@pytest.mark.parametrize(
    ("table", "field", "expected"),
    [
        ({"program": "rm", "options": ["r"]}, "options", "expected options such as '-r' or '-r|--recursive', got 'r'"),
        ({"program": "rm", "options": ["-r|"]}, "options", "expected options such as"),
        ({"program": "rm", "options": [""]}, "options", "expected options such as"),
        ({"program": "rm", "options": ["-"]}, "options", "expected options such as"),
        ({"program": "rm", "options": ["--"]}, "options", "expected options such as"),
        ({"program": "rm", "options": ["- r"]}, "options", "expected options such as"),
        ({"program": "rm", "options": ["-rf"]}, "options", "as separate entries: '-r', '-f'"),
        ({"program": "rm", "options": ["--force=yes"]}, "options", "without a value such as '--force'"),
        ({"program": ""}, "program", "expected a program name or glob such as 'rm'"),
        ({"program": "rm -rf"}, "program", "(options and arguments go in options and args), got 'rm -rf'"),
        ({"program": "rm", "args": [""]}, "args", "expected argument globs such as '/'"),
        ({"program": "rm", "args": "/"}, "args", ""),
        ({"program": "rm", "options": "-r"}, "options", ""),
        ({"options": ["-r"]}, "program", ""),
        ({"program": "rm", "prog": "rm"}, "prog", ""),
    ],
)
def test_validation_errors_are_one_line_and_name_the_field(table: dict[str, object], field: str, expected: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ExecPattern.model_validate(table)
    errors = caught.value.errors()
    assert len(errors) == 1
    (error,) = errors
    assert error["loc"][0] == field
    message = str(error["msg"])
    assert "\n" not in message
    assert expected in message


def test_toml_round_trip() -> None:
    raw = tomllib.loads('exec = ["ls *", { program = "rm", options = ["-r"], args = ["/"] }]')
    text, table = raw["exec"]
    assert text == "ls *"
    pattern = ExecPattern.model_validate(table)
    assert pattern == ExecPattern(program="rm", options=("-r",), args=("/",))
    assert matches(pattern, ["rm", "-rv", "/"])
    assert ExecPattern.model_validate(pattern.model_dump()) == pattern
    unknown = tomllib.loads('exec = [{ prog = "rm" }]')["exec"][0]
    with pytest.raises(ValidationError) as caught:
        ExecPattern.model_validate(unknown)
    assert {error["type"] for error in caught.value.errors()} == {"extra_forbidden", "missing"}
    assert ("prog",) in [error["loc"] for error in caught.value.errors()]


def test_patterns_are_frozen_and_hashable() -> None:
    with pytest.raises(ValidationError):
        RM_RF_ROOT.program = "ls"  # type: ignore[misc]
    assert len({RM_RF_ROOT, ExecPattern(program="rm", options=("-r|-R|--recursive", "-f|--force"), args=("/",))}) == 1
