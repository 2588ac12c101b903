"""Shell-line gating's edges: which exec commands start an interactive shell (gated line by line)."""

from __future__ import annotations

import pytest

from bastion.shell.gating import runs_a_shell


@pytest.mark.parametrize(
    ("command", "expected"),
    [("bash", True), ("/bin/bash -l", True), ("exec zsh", True), ("FOO=1 sh", True), ("bash --login", True),
     ("bash -c ls", False), ("bash -lc ls", False), ("sh script.sh", False), ("ls", False)],
)  # fmt: skip
def test_an_exec_that_starts_an_interactive_shell_is_a_shell(command: str, expected: bool) -> None:
    assert runs_a_shell(command) is expected
