"""End to end: an interactive shell through a pty (tmux drives the real ssh client, we read its screen)."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import BastionEnv, wait_until

pytestmark = pytest.mark.e2e


class Terminal:
    """A tmux window running `ssh -t -J bastion mcp-host`."""

    def __init__(self, env: BastionEnv, cols: int = 100, rows: int = 30) -> None:
        self.name = f"bastion-{uuid.uuid4().hex[:8]}"
        # A tmux server of its own (-L): no race with another test's server shutting down.
        self.tmux = ["tmux", "-L", self.name, "-f", "/dev/null"]
        command = f"ssh -F {env.ssh_config} -t -J bastion {env.login}@mcp-host"
        size = ["-x", str(cols), "-y", str(rows)]
        subprocess.run([*self.tmux, "new-session", "-d", "-s", self.name, *size, command], check=True)

    def screen(self) -> str:
        result = subprocess.run([*self.tmux, "capture-pane", "-p", "-t", self.name], capture_output=True, text=True)
        return result.stdout

    def keys(self, *keys: str) -> None:
        subprocess.run([*self.tmux, "send-keys", "-t", self.name, *keys], check=True)

    def line(self, text: str) -> None:
        self.keys("-l", text)
        self.keys("Enter")

    def wait_for(self, pattern: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if re.search(pattern, screen, re.MULTILINE):
                return screen
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} never appeared; screen:\n{self.screen()}")

    def resize(self, cols: int, rows: int) -> None:
        subprocess.run([*self.tmux, "resize-window", "-t", self.name, "-x", str(cols), "-y", str(rows)], check=True)

    def wait_for_size(self, cols: int, rows: int, timeout: float = 10.0) -> None:
        """Until the remote shell's terminal has this size (`stty size` there says so), e.g. after resize()."""
        deadline = time.monotonic() + timeout
        while True:
            marker = uuid.uuid4().hex[:8]
            self.line(f"echo size-{marker}=$(stty size)")
            screen = self.wait_for(rf"^size-{marker}=\d+ \d+$")
            if re.search(rf"^size-{marker}={rows} {cols}$", screen, re.MULTILINE):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the remote terminal never became {cols}x{rows}; screen:\n{screen}")

    def alive(self) -> bool:
        return subprocess.run([*self.tmux, "has-session", "-t", self.name], capture_output=True).returncode == 0

    def close(self) -> None:
        subprocess.run([*self.tmux, "kill-server", "-t", self.name], capture_output=True)


@pytest.fixture
def terminal(env: BastionEnv) -> Iterator[Terminal]:
    assert shutil.which("tmux"), "tmux is needed for the interactive tests (scripts/test installs it)"
    term = Terminal(env)
    try:
        term.wait_for(r"[$#]\s*$")
        yield term
    finally:
        term.close()


def test_shell_runs_commands_and_sees_window_changes(env: BastionEnv, terminal: Terminal) -> None:
    terminal.line("echo answer=$((6*7))")
    terminal.wait_for(r"^answer=42")
    terminal.line("stty size")
    terminal.wait_for(r"^30 100$")
    terminal.resize(120, 40)
    terminal.wait_for_size(120, 40)  # the window change reaches the target's pty
    terminal.line("echo term=$TERM")
    terminal.wait_for(r"^term=(screen|tmux)")


def test_ctrl_c_interrupts_a_running_command(terminal: Terminal) -> None:
    terminal.line("echo running-$((6*7)); sleep 100; echo not-interrupted")
    terminal.wait_for(r"^running-42$")  # the command line runs: Ctrl-C interrupts it, not the typing
    terminal.keys("C-c")
    terminal.line("echo after-interrupt")
    terminal.wait_for(r"^after-interrupt")  # well before `sleep 100` could have ended by itself
    assert "not-interrupted" not in terminal.screen().replace("echo not-interrupted", "")


def test_full_screen_programs_work(terminal: Terminal) -> None:
    terminal.line("less /etc/services")
    terminal.wait_for(r"^ftp\s+21/tcp")
    terminal.keys("q")
    terminal.line("echo left-less")
    terminal.wait_for(r"^left-less")
    name = f"vim-{uuid.uuid4().hex[:8]}.txt"
    terminal.line(f"vim -u NONE -N {name}")
    terminal.wait_for(r"^~\s*$")  # vim is drawing its empty buffer
    terminal.keys("i")
    terminal.keys("-l", "written in vim")
    terminal.keys("Escape")
    terminal.keys("-l", ":wq")
    terminal.keys("Enter")
    # Back at the prompt (vim drops typeahead that arrives before it exits).
    terminal.wait_for(rf"vim -u NONE -N {re.escape(name)}\n\S+[$#]\s*$")
    terminal.line(f"cat {name} && rm {name}")
    terminal.wait_for(r"^written in vim$")
    terminal.line("top -d 0.5")
    terminal.wait_for(r"PID\s+USER")
    terminal.keys("q")
    terminal.wait_for(r"\S+[$#]\s*\Z")  # top discards typeahead when it exits: wait for the prompt
    terminal.line("echo left-top")
    terminal.wait_for(r"^left-top")


def test_shell_session_is_recorded_with_pty_and_resize(env: BastionEnv, terminal: Terminal) -> None:
    marker = uuid.uuid4().hex[:12]
    terminal.line(f"echo recorded-{marker}")
    terminal.wait_for(f"^recorded-{marker}")
    terminal.resize(90, 25)
    terminal.wait_for_size(90, 25)  # the bastion has seen (and recorded) the window change
    terminal.line("exit 0")
    wait_until(lambda: not terminal.alive(), "ssh to end with the shell")
    store = env.store()

    def recorded() -> list[str]:
        return [
            s.id
            for s in store.sessions()
            if s.kind == "shell"
            and s.status == "closed"
            and any(marker.encode() in e.data for e in store.events(s.id) if e.type == "stdout")
        ]

    (session_id,) = wait_until(recorded, "the closed shell session with its output in the recording")
    env.sealed(session_id)
    session = store.session(session_id)
    assert session is not None
    assert session.term and session.cols == 100 and session.rows == 30 and session.exit_status == 0
    events = list(store.events(session.id))
    assert any(e.type == "resize" and e.fields() == {"cols": 90, "rows": 25} for e in events)
    assert any(e.type == "input" for e in events)
    text = env.bastion("audit", "export", session.id, "--format", "text").stdout
    assert f"recorded-{marker}" in text
