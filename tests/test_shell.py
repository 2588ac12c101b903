"""Shell-line reconstruction on real byte streams: bash with readline in a pty, driven key by key.

Each test types into a real `bash -i`, feeds what bash prints to a ShellLineTracker, reads the
tracker's line at the moment before Enter, and compares it with what bash then ran (the history
entry that PROMPT_COMMAND writes to a file after every command).
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.shell.tracker import CLEAR_LINE, ShellLineTracker, unfinished

UP, LEFT = b"\x1b[A", b"\x1b[D"
CTRL_A, CTRL_C, CTRL_D, CTRL_E, CTRL_L, CTRL_R = b"\x01", b"\x03", b"\x04", b"\x05", b"\x0c", b"\x12"
BACKSPACE, TAB = b"\x7f", b"\t"
QUIET = 0.15  # output is settled after this long without a byte (readline tells no "redrawn"; the bastion waits so too)
TIMEOUT = 5.0  # no single wait in these tests is longer


class Bash:
    """An interactive bash in a pty whose output feeds a tracker, and keys typed the way a session would."""

    def __init__(self, home: Path, cols: int = 80, rows: int = 24, ps1: str = "test$ ") -> None:
        self.home = home
        self.tracker = ShellLineTracker(cols, rows)
        self.master, slave = os.openpty()
        self._winsize(slave, cols, rows)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "HISTFILE": str(home / "history"),
            "INPUTRC": "/dev/null",
            "TERM": "xterm-256color",
            "LANG": "C.UTF-8",
            "PS1": ps1,
            "BASHOPTS": "cmdhist:lithist",
            # What bash ran, out of band: the newest history entry, after every command.
            "PROMPT_COMMAND": 'fc -ln -1 > "$HOME/ran" 2>/dev/null',
        }
        self.process = subprocess.Popen(
            ["bash", "--noprofile", "--norc", "-i"],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=home,
            env=env,
            start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(slave)
        self.transcript = b""
        try:
            self.wait_for_prompt()
        except BaseException:  # no prompt: the caller gets no Bash to close, so close it here
            self.close()
            raise

    @staticmethod
    def _winsize(fd: int, cols: int, rows: int) -> None:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def close(self) -> None:
        self.process.kill()
        self.process.wait(timeout=TIMEOUT)
        os.close(self.master)

    # Output.
    def _read(self, wait: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], wait)
        if not ready:
            return False
        try:
            data = os.read(self.master, 65536)
        except OSError:
            return False
        self.transcript += data
        self.tracker.output(data)
        return bool(data)

    def settle(self) -> None:
        """Read until the output has been quiet for a moment (bounded)."""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and self._read(QUIET):
            pass

    def wait_for(self, done: object, what: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not done():  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; output: {self.transcript[-400:]!r}")
            self._read(0.05)
        self.settle()

    def wait_for_prompt(self, since: int = 0) -> None:
        """Until bash shows its primary prompt in output after offset `since` of the transcript."""
        self.wait_for(lambda: self.transcript[since:].endswith(b"test$ "), "the prompt")

    def wait_for_text(self, text: bytes) -> None:
        start = len(self.transcript)
        self.wait_for(lambda: text in self.transcript[start - len(text) :], repr(text))

    # Input, as the session does it: forward what comes before an Enter, hold the Enter.
    def type(self, keys: bytes) -> None:
        before, enter, after = self.tracker.split_at_enter(keys)
        assert enter is None and after == b"", f"unexpected Enter in {keys!r}"
        os.write(self.master, before)
        if before:  # every key typed in these tests gets an answer on the screen: wait for it, then the rest
            self.wait_for(lambda: not self.tracker.awaiting_echo, f"the echo of {keys!r}")
        else:
            self.settle()

    def enter(self) -> tuple[str, bool]:
        """Press Enter: the line and the gating verdict at the moment it is held, then let it through."""
        before, enter, after = self.tracker.split_at_enter(b"\r")
        assert (before, enter, after) == (b"", b"\r", b"")
        self.settle()
        line, gating = self.tracker.line(), self.tracker.gating
        os.write(self.master, enter)
        self.tracker.submitted()
        return line, gating

    def run(self, keys: bytes) -> str:
        """Type keys, press Enter, wait for the prompt; the line the tracker saw (it was gated)."""
        self.type(keys)
        mark = len(self.transcript)
        line, gating = self.enter()
        assert gating
        self.wait_for_prompt(mark)
        return line

    def ran(self) -> str:
        """What bash last ran, as its history has it."""
        text = (self.home / "ran").read_text()
        return text.removeprefix("\t").removeprefix(" ").rstrip()


@pytest.fixture
def bash(tmp_path: Path) -> Iterator[Bash]:
    shell = Bash(tmp_path)
    yield shell
    shell.close()


@pytest.fixture
def narrow(tmp_path: Path) -> Iterator[Bash]:
    shell = Bash(tmp_path, cols=40, rows=12)
    yield shell
    shell.close()


def test_plain_typing(bash: Bash) -> None:
    assert bash.tracker.gating
    line = bash.run(b"echo hello world")
    assert line == "echo hello world" == bash.ran()
    assert b"hello world\r\n" in bash.transcript


def test_wide_characters_wrapping(narrow: Bash) -> None:
    text = "日本語のテキスト" * 3  # 48 cells: wraps, and a wide character meets the right margin
    narrow.type(b"echo a")
    line = narrow.run(f"{text} {text}".encode())
    assert line == f"echo a{text} {text}" == narrow.ran()


def test_backspace(bash: Bash) -> None:
    bash.type(b"echo helxx")
    bash.type(BACKSPACE * 2)
    line = bash.run(b"lo")
    assert line == "echo hello" == bash.ran()


def test_ctrl_a_insertion_at_start_then_ctrl_e(bash: Bash) -> None:
    bash.type(b"cho start")
    bash.type(CTRL_A + b"e")
    assert bash.tracker.line() == "echo start"
    line = bash.run(CTRL_E + b" end")
    assert line == "echo start end" == bash.ran()


def test_left_arrow_insertion_mid_line_with_cursor_left_there(bash: Bash) -> None:
    bash.type(b"echo abd")
    line = bash.run(LEFT + b"c")  # Enter with the cursor before "d": the whole line runs
    assert line == "echo abcd" == bash.ran()


def test_history_recall_with_up(bash: Bash) -> None:
    bash.run(b"echo first")
    assert bash.run(UP) == "echo first" == bash.ran()
    assert bash.run(UP + b" again") == "echo first again" == bash.ran()


def test_tab_completes_a_unique_file_name(bash: Bash) -> None:
    (bash.home / "beta.txt").write_text("contents of beta\n")
    line = bash.run(b"cat be" + TAB)
    assert line == "cat beta.txt" == bash.ran()
    assert b"contents of beta" in bash.transcript


def test_tab_lists_ambiguous_candidates_then_completes(bash: Bash) -> None:
    for name in ("alpha_one.txt", "alpha_two.txt"):
        (bash.home / name).write_text(f"{name} here\n")
    bash.type(b"cat alpha_")
    bash.type(TAB + TAB)  # nothing more to insert: the second Tab lists the candidates
    assert b"alpha_one.txt  alpha_two.txt" in bash.transcript
    assert bash.tracker.line() == "cat alpha_"
    line = bash.run(b"t" + TAB)
    assert line == "cat alpha_two.txt" == bash.ran()
    assert b"alpha_two.txt here" in bash.transcript


def test_ambiguous_completion_listing_at_the_bottom_of_the_screen(narrow: Bash) -> None:
    for index in range(12):
        (narrow.home / f"gamma_{index:02d}.log").write_text(f"gamma {index}\n")
    narrow.run(b"seq 30")  # the prompt is on the last row: the listing scrolls the screen
    narrow.type(b"cat gamma_")
    narrow.type(TAB + TAB)
    assert b"gamma_11.log" in narrow.transcript
    line = narrow.run(b"07" + TAB)
    assert line == "cat gamma_07.log" == narrow.ran()
    assert b"gamma 7\r\n" in narrow.transcript


def test_enter_that_readline_does_not_accept_keeps_the_line(bash: Bash) -> None:
    bash.type(b"echo two")
    bash.tracker.split_at_enter(b"\x1b")
    os.write(bash.master, b"\x1b")
    _, enter, _ = bash.tracker.split_at_enter(b"\r")  # M-C-m: gated, let through, bash only rings
    assert enter == b"\r" and bash.tracker.line() == "echo two"
    os.write(bash.master, enter)
    bash.tracker.submitted()
    bash.settle()
    line = bash.run(CTRL_A + b"echo one; ")
    assert line == "echo one; echo two" == bash.ran()


def test_after_bulk_output(bash: Bash) -> None:
    bash.run(b"seq 60000")
    assert bash.run(b"echo after") == "echo after" == bash.ran()


def test_output_without_a_final_newline_before_the_prompt(bash: Bash) -> None:
    bash.type(b"printf foo")
    mark = len(bash.transcript)
    bash.enter()
    bash.wait_for_prompt(mark)
    assert bash.transcript.endswith(b"foo\x1b[?2004htest$ ")
    assert bash.run(b"echo bar") == "echo bar" == bash.ran()


def test_prompt_of_two_rows_that_changes_with_the_directory(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    shell = Bash(tmp_path, ps1="[\\w]\\ntest$ ")
    try:
        shell.run(b"cd sub")
        assert shell.run(b"echo in sub") == "echo in sub" == shell.ran()
        shell.type(b"cd ..")
        mark = len(shell.transcript)
        shell.enter()
        shell.type(b"echo ahead")  # typed before the new prompt is drawn
        shell.wait_for(lambda: shell.transcript[mark:].endswith(b"test$ echo ahead"), "the prompt")
        assert shell.run(b"") == "echo ahead" == shell.ran()
    finally:
        shell.close()


def test_line_longer_than_the_terminal_wraps(narrow: Bash) -> None:
    words = " ".join(f"w{i:02d}" for i in range(30))  # 119 characters: four rows of 40
    narrow.type(b"echo " + words.encode())
    narrow.type(CTRL_A + b"X")  # inserting at the start reflows every row
    narrow.type(BACKSPACE + CTRL_E)
    line = narrow.run(b" end")
    assert line == f"echo {words} end" == narrow.ran()
    assert f"{words} end".encode() in narrow.transcript.replace(b"\r\n", b"")


def test_wrapped_line_shortened_by_history_recall(narrow: Bash) -> None:
    narrow.run(b"echo short")
    narrow.type(b"echo " + b"y" * 70)
    line = narrow.run(UP)
    assert line == "echo short" == narrow.ran()


def test_multi_line_command_with_an_unterminated_quote(bash: Bash) -> None:
    bash.type(b'echo "first')
    first, gating = bash.enter()
    assert (first, gating) == ('echo "first', True)
    bash.wait_for_text(b"> ")
    assert bash.tracker.line() == 'echo "first\n'
    line = bash.run(b'second"')
    assert line == 'echo "first\nsecond"' == bash.ran()
    assert b"first\r\nsecond\r\n" in bash.transcript
    assert bash.run(b"echo next") == "echo next"  # the next command starts afresh


def test_trailing_backslash_continuation(bash: Bash) -> None:
    bash.type(b"echo one \\")
    assert bash.enter() == ("echo one \\", True)
    bash.wait_for_text(b"> ")
    line = bash.run(b"two")
    assert line == "echo one \\\ntwo"
    assert b"one two\r\n" in bash.transcript


def test_denied_continuation_is_dropped_with_clear_line(bash: Bash) -> None:
    bash.type(b"echo 'one")
    bash.enter()
    bash.wait_for_text(b"> ")
    bash.type(b"two'")
    mark = len(bash.transcript)
    _, enter, _ = bash.tracker.split_at_enter(b"\r")
    assert enter == b"\r" and bash.tracker.line() == "echo 'one\ntwo'"
    os.write(bash.master, CLEAR_LINE)  # denied: the Enter never reaches bash
    bash.tracker.cleared()
    bash.wait_for_prompt(mark)
    assert bash.run(b"echo after") == "echo after" == bash.ran()
    assert b"one\r\ntwo" not in bash.transcript


def test_approval_message_written_while_the_enter_is_held(bash: Bash) -> None:
    bash.type(b'echo "held')
    assert bash.tracker.split_at_enter(b"\r") == (b"", b"\r", b"")
    assert bash.tracker.line() == 'echo "held'
    bash.tracker.output(b"\r\nbastion: waiting for approval (request 7, rule r)...\r\n")  # the client sees it too
    os.write(bash.master, b"\r")  # approved
    bash.tracker.submitted()
    bash.wait_for_text(b"> ")
    line = bash.run(b'line"')
    assert line == 'echo "held\nline"' == bash.ran()


def test_ctrl_c_typed_by_the_user_abandons_the_line(bash: Bash) -> None:
    bash.type(b"echo 'abandoned")
    bash.enter()
    bash.wait_for_text(b"> ")
    mark = len(bash.transcript)
    bash.type(b"still" + CTRL_C)
    bash.wait_for_prompt(mark)
    assert bash.run(b"echo fresh") == "echo fresh" == bash.ran()


def test_bracketed_paste_of_two_lines_is_one_held_line(bash: Bash) -> None:
    bash.type(b"\x1b[200~echo p1\recho p2\x1b[201~")  # the Enter inside the paste is not an Enter
    line = bash.run(b"")
    assert line == "echo p1\necho p2"
    assert b"p1\r\np2\r\n" in bash.transcript


def test_reverse_history_search(bash: Bash) -> None:
    bash.run(b"echo zz-marker")
    bash.run(b"echo other")
    line = bash.run(CTRL_R + b"zz-m")
    assert line == "echo zz-marker" == bash.ran()


def test_clear_screen_redraws_the_line_at_the_top(bash: Bash) -> None:
    bash.run(b"echo filler")
    bash.type(b"echo kept")
    line = bash.run(CTRL_L + b" here")
    assert line == "echo kept here" == bash.ran()


def test_keys_typed_ahead_of_the_prompt(bash: Bash) -> None:
    bash.type(b"sleep 0.3")
    mark = len(bash.transcript)
    bash.enter()
    bash.wait_for_text(b"\x1b[?2004l\r")  # sleep runs: the tty echoes what is typed now
    bash.type(b"echo ahead")  # echoed by the tty while sleep runs, then again by readline
    bash.wait_for_text(b"test$ echo ahead")
    assert b"echo ahead\x1b[?2004htest$ echo ahead" in bash.transcript[mark:]
    assert bash.run(b"") == "echo ahead" == bash.ran()


def test_full_screen_programs_are_not_gated(bash: Bash) -> None:
    (bash.home / "notes.txt").write_text("line one\nline two\n")
    bash.type(b"less notes.txt")
    mark = len(bash.transcript)
    bash.enter()
    bash.wait_for_text(b"(END)")
    assert not bash.tracker.gating
    bash.type(b"q")
    bash.wait_for_prompt(mark)
    assert bash.tracker.gating
    assert bash.run(b"echo back") == "echo back" == bash.ran()


def test_vim_is_not_gated_and_the_main_screen_comes_back(bash: Bash) -> None:
    bash.type(b"echo before-vim")
    bash.type(CTRL_A)
    bash.type(b"vim -u NONE -N notes.txt; ")
    mark = len(bash.transcript)
    bash.enter()
    bash.wait_for(lambda: bash.tracker.full_screen, "vim's screen")
    bash.type(b"ihello")
    assert not bash.tracker.gating
    os.write(bash.master, b"\r\x1b:wq\r")  # Enters inside vim go through ungated
    bash.wait_for_prompt(mark)
    assert bash.tracker.gating
    assert bash.ran() == "vim -u NONE -N notes.txt; echo before-vim"
    assert bash.run(b"echo after-vim") == "echo after-vim" == bash.ran()


def test_a_shell_prompting_inside_the_alternate_screen_is_still_gated(bash: Bash) -> None:
    bash.run(b"printf '\\033[?1049h'")
    assert bash.tracker.full_screen
    assert bash.tracker.gating
    assert bash.run(b"echo inside") == "echo inside" == bash.ran()


def test_a_program_reading_stdin_is_not_gated(bash: Bash) -> None:
    """The rule: once bash has shown that it switches bracketed paste on at its prompt, lines read
    while it is off (cat, read, password prompts) are a program's input and are not gated."""
    bash.type(b"cat")
    mark = len(bash.transcript)
    bash.enter()
    bash.wait_for_text(b"\x1b[?2004l\r")
    assert not bash.tracker.gating
    bash.type(b"some input")
    assert not bash.tracker.gating
    bash.tracker.split_at_enter(b"\r")
    os.write(bash.master, b"\r")
    bash.tracker.submitted()
    bash.wait_for_text(b"some input\r\n")
    bash.type(CTRL_D)
    bash.wait_for_prompt(mark)
    assert bash.tracker.gating
    assert bash.run(b"echo done") == "echo done" == bash.ran()


def test_bracketed_paste_switched_off_is_still_gated_at_the_known_prompt(bash: Bash) -> None:
    bash.run(b"bind 'set enable-bracketed-paste off'")
    assert not bash.tracker.bracketed_paste
    assert bash.tracker.gating
    assert bash.run(b"echo still gated") == "echo still gated" == bash.ran()
    bash.type(b"cat")
    bash.enter()
    bash.wait_for_text(b"cat\r\n")
    assert not bash.tracker.gating


def test_resize_then_edit(narrow: Bash) -> None:
    narrow.type(b"echo " + b"r" * 50)
    Bash._winsize(narrow.master, 60, 12)
    narrow.tracker.resize(60, 12)
    narrow.process.send_signal(signal.SIGWINCH)  # readline draws the line again
    narrow.settle()
    line = narrow.run(b" end")
    assert line == "echo " + "r" * 50 + " end" == narrow.ran()


# The pieces, without bash.
def test_split_at_enter_finds_enter_keys() -> None:
    tracker = ShellLineTracker()
    assert tracker.split_at_enter(b"ls -l\rpwd\r") == (b"ls -l", b"\r", b"pwd\r")
    assert tracker.split_at_enter(b"pwd\r") == (b"pwd", b"\r", b"")
    assert tracker.split_at_enter(b"a\nb") == (b"a", b"\n", b"b")
    assert tracker.split_at_enter(b"\x0f") == (b"", b"\x0f", b"")  # C-o runs the line too
    assert tracker.split_at_enter(b"x") == (b"x", None, b"")


def test_split_at_enter_skips_quoted_and_pasted_enters() -> None:
    tracker = ShellLineTracker()
    tracker.output(b"\x1b[?2004htest$ ")  # the shell asked for bracketed paste
    assert tracker.split_at_enter(b"a\x16\rb") == (b"a\x16\rb", None, b"")
    assert tracker.split_at_enter(b"\x1b[20") == (b"\x1b[20", None, b"")  # a paste marker, split
    assert tracker.split_at_enter(b"0~one\rtwo\x1b[2") == (b"0~one\rtwo\x1b[2", None, b"")
    assert tracker.split_at_enter(b"01~\r") == (b"01~", b"\r", b"")
    assert tracker.split_at_enter(b"\x1b\r") == (b"\x1b", b"\r", b"")  # ESC then Enter: gated


def test_paste_markers_do_not_hide_enters_from_a_shell_that_did_not_ask_for_them() -> None:
    tracker = ShellLineTracker()
    tracker.output(b"$ ")
    assert tracker.split_at_enter(b"\x1b[200~rm -rf x\r") == (b"\x1b[200~rm -rf x", b"\r", b"")


def test_alternate_screen_restores_the_main_screen() -> None:
    tracker = ShellLineTracker(20, 5)
    tracker.output(b"\x1b[?2004htest$ ")
    tracker.split_at_enter(b"ls")
    tracker.output(b"ls")
    tracker.output(b"\x1b[?1049h\x1b[2Jfull screen\r\n" * 8)
    assert not tracker.gating
    tracker.output(b"\x1b[?1049l")
    assert tracker.gating and tracker.line() == "ls"


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("echo 'open", True),
        ('echo "open', True),
        ("echo $'it\\'s", True),
        ("echo one \\", True),
        ("ls |", True),
        ("true &&", True),
        ("echo 'closed'", False),
        ("echo it\\'s", False),
        ("echo done # it's fine", False),
        ("echo a\\\\", False),
        ("sleep 1 &", False),
    ],
)
def test_unfinished(command: str, expected: bool) -> None:
    assert unfinished(command) is expected


PIECES = [
    b"\x1b[?2004h", b"\x1b[?2004l", b"\x1b[?1049h", b"\x1b[?1049l", b"\x1b[?47h", b"\x1b[2J", b"\x1b[K",
    b"\x1b[A", b"\x1b[5L", b"\x1b[3M", b"\x1b[?4m", b"\x1b[3;9r", b"\x1bc", b"\x1b[200~", b"\x1b[201~",
    b"\r\n", b"\r", b"\x08", b"test$ ", b"> ", b"echo hi", "日本".encode(), b"\x03", b"\x16", b"\t",
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 9), st.one_of(st.sampled_from(PIECES), st.binary(max_size=40))), max_size=40))
def test_any_bytes_in_either_direction_never_break_the_tracker(steps: list[tuple[int, bytes]]) -> None:
    tracker = ShellLineTracker(20, 6)
    for kind, data in steps:
        if kind == 0:
            tracker.resize(len(data) % 30 + 1, len(data) % 7 + 1)
        elif kind < 5:
            tracker.output(data)
        else:
            while data:
                _, enter, data = tracker.split_at_enter(data)
                if enter is not None:
                    assert isinstance(tracker.line(), str)
                    tracker.submitted() if tracker.gating else tracker.cleared()
    assert isinstance(tracker.line(), str) and isinstance(tracker.gating, bool)


def test_the_alignment_test_pattern_draws_nothing() -> None:
    """DECALN (ESC # 8) would fill every cell with "E" from 3 bytes: the screen model ignores it, so a
    flood of it costs nothing and the line typed is still read as typed."""
    tracker = ShellLineTracker(20, 5)
    tracker.output(b"\x1b[?2004htest$ ")
    tracker.split_at_enter(b"ls")
    tracker.output(b"ls" + b"\x1b#8" * 1000)
    assert tracker.line() == "ls"


def test_the_screen_must_show_every_key_typed_on_the_line() -> None:
    """Keys typed after a Tab that a completion function has not echoed yet: the line on the screen is not
    the line that would run, and the tracker says so; once echoed it does; an edit key ends the check."""
    tracker = ShellLineTracker(40, 5)
    tracker.output(b"\x1b[?2004htest$ ")
    tracker.split_at_enter(b"echo x; \ttouch /tmp/f")
    tracker.output(b"echo x; ")  # the completion function is still running
    assert tracker.shows_what_was_typed() is False
    tracker.output(b"touch /tmp/f")
    assert tracker.shows_what_was_typed() is True and tracker.line() == "echo x; touch /tmp/f"
    tracker.split_at_enter(b"\x7f")  # backspace: no telling any more
    tracker.output(b"\x08 \x08")
    assert tracker.shows_what_was_typed() is None
