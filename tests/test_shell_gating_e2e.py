"""Shell-line gating's record never lies: in a real interactive bash through the bastion (tmux, ssh -t -J),
lines that would run something other than what the screen shows (a slow completion still inserting text,
history expansion, key bindings, a nested shell, a new prompt) are decided on what will run or not let
through. `touch` of a fresh path stands in for the real command: a file that exists afterwards ran."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BastionEnv, running_env
from tests.test_interactive_e2e import Terminal

pytestmark = pytest.mark.e2e

RULES = """
[[rules]]
name = "dev-works"
effect = "allow"
groups = ["dev"]

[[rules]]
name = "no-touching"
effect = "deny"
exec = ["touch *"]
message = "files stay as they are"
"""
SLOW_COMPLETION = "_slow() { sleep 2; }; complete -E -F _slow; complete -I -F _slow; echo ready-$((40+2))"


@pytest.fixture(scope="module")
def genv() -> Iterator[BastionEnv]:
    with running_env(RULES) as environment:
        yield environment


@pytest.fixture
def shell(genv: BastionEnv) -> Iterator[Terminal]:
    term = Terminal(genv)
    try:
        term.wait_for(r"[$#]\s*$")
        yield term
    finally:
        term.close()


def fresh(kind: str) -> Path:
    return Path(f"/tmp/bastion-{kind}-{uuid.uuid4().hex}")


def opaque_refusal(genv: BastionEnv, shell: Terminal, why: str) -> None:
    """The line was refused as opaque, on the screen and in the audit log, with the reason."""
    shell.wait_for(r"^bastion: denied by rule \(opaque\): the bastion cannot tell what this runs")
    genv.logged("policy.deny", lambda f: f["rule"] == "(opaque)" and why in f["message"])


def goes_on(shell: Terminal) -> None:
    """The shell runs lines in order: once this one's output shows, anything typed before it has run."""
    marker = uuid.uuid4().hex[:8]
    shell.line(f"echo after-{marker}-$((40+2))")
    shell.wait_for(rf"^after-{marker}-42")


def test_keys_a_slow_completion_has_not_echoed_yet_are_decided_as_they_will_run(
    genv: BastionEnv, shell: Terminal
) -> None:
    """`echo x; <Tab>touch X<Enter>` in one write, with a completion function that takes 2 s: the gate
    does not decide `echo x;` while bash still has the rest to insert."""
    shell.line(SLOW_COMPLETION)
    shell.wait_for(r"^ready-42")
    path = fresh("slow")
    shell.keys("-l", f"echo x; \ttouch {path}\r")
    shell.wait_for(r"^bastion: denied")
    goes_on(shell)
    assert not path.exists()
    entry = genv.logged("policy.deny", lambda f: str(path) in f["text"] or "not all on the screen" in f["message"])
    assert entry


def test_leading_blanks_and_a_tab_do_not_run_a_line_unchecked(genv: BastionEnv, shell: Terminal) -> None:
    shell.line(SLOW_COMPLETION)
    shell.wait_for(r"^ready-42")
    path = fresh("blank")
    shell.keys("-l", f"   \ttouch {path}\r")
    shell.wait_for(r"^bastion: denied")
    goes_on(shell)
    assert not path.exists()


def test_history_expansion_is_opaque(genv: BastionEnv, shell: Terminal) -> None:
    path = fresh("history")
    shell.line(f"echo touch {path}")
    shell.wait_for(rf"^touch {path}$")
    shell.line("$(!!)")  # would run `touch PATH` from history
    opaque_refusal(genv, shell, "history expansion")
    goes_on(shell)
    assert not path.exists()


def test_a_key_binding_that_runs_a_command_is_opaque(genv: BastionEnv, shell: Terminal) -> None:
    path = fresh("bind")
    shell.line(f"bind -x '\"\\C-t\": touch {path}'")
    opaque_refusal(genv, shell, "bind can make a key run a command")
    shell.keys("C-t")
    goes_on(shell)
    assert not path.exists()


def test_a_nested_shell_is_opaque_and_the_gated_shell_goes_on(genv: BastionEnv, shell: Terminal) -> None:
    shell.line("sh")
    opaque_refusal(genv, shell, "sh runs the code it reads from its input")
    path = fresh("nested")
    shell.line(f"touch {path}")  # still bash, still gated
    shell.wait_for(r"^bastion: denied by rule no-touching")
    goes_on(shell)
    assert not path.exists()


def test_changing_the_prompt_is_opaque(genv: BastionEnv, shell: Terminal) -> None:
    shell.line("PS1='> '")
    opaque_refusal(genv, shell, "it sets PS1")
    path = fresh("prompt")
    shell.line(f"touch {path}")
    shell.wait_for(r"^bastion: denied by rule no-touching")
    goes_on(shell)
    assert not path.exists()
