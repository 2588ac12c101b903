"""Exec deny rules a command line could walk around: with real ssh through the bastion, lines whose
programs cannot be told from their text (continuation lines, code piped or handed to a shell or an
interpreter) are never allowed where deny or approve rules apply: held where approvers exist for the
host, denied where none do. `/usr/sbin/reboot --help` stands in for the real command (it prints help)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import BastionEnv, running_env, wait_until

pytestmark = pytest.mark.e2e

DENIED = 77
RULES = """
[[rules]]
name = "dev-works"
effect = "allow"
groups = ["dev"]

[[rules]]
name = "no-reboot"
effect = "deny"
exec = ["reboot*", "/usr/sbin/reboot*"]

[[rules]]
name = "no-rm-kept"
effect = "deny"
exec = [{ program = "rm", options = ["-r|-R|--recursive", "-f|--force"], args = ["/tmp/bastion-kept-*"] }]

[[rules]]
name = "restarts-wait"
effect = "approve"
hosts = ["mcp-host"]
exec = ["systemctl restart *"]
approvers = ["ops"]
"""
REBOOT = "/usr/sbin/reboot --help"
WALKAROUNDS = [
    "/usr/sbin/re\\\nboot --help",  # backslash-newline: the shell joins the word
    f"echo {REBOOT} | sh",
    f"sh <<< '{REBOOT}'",
    f"sh <(echo {REBOOT})",
    f"python3 -c 'import os; os.system(\"{REBOOT}\")'",
]


@pytest.fixture(scope="module")
def oenv() -> Iterator[BastionEnv]:
    with running_env(RULES) as environment:
        yield environment


def test_the_plain_command_is_denied_by_its_rule(oenv: BastionEnv) -> None:
    result = oenv.ssh(REBOOT)
    assert result.returncode == DENIED and result.stdout == b""
    assert b"denied by rule no-reboot" in result.stderr


@pytest.mark.parametrize("line", WALKAROUNDS)
def test_a_line_the_bastion_cannot_read_is_denied_where_nobody_may_approve(oenv: BastionEnv, line: str) -> None:
    """pinned-host has a deny rule and no approvers: an opaque line is denied, and says why."""
    result = oenv.ssh(line, host="pinned-host")
    assert result.returncode == DENIED and result.stdout == b"", result.stdout  # reboot's help never printed
    assert b"cannot tell what this runs" in result.stderr, result.stderr
    entry = oenv.logged("policy.deny", lambda f: f["rule"] == "(opaque)" and f["host"] == "pinned-host")[-1]
    assert entry["opaque"], entry


@pytest.mark.parametrize("line", WALKAROUNDS[:2])
def test_a_line_the_bastion_cannot_read_is_held_where_approvers_exist(oenv: BastionEnv, line: str) -> None:
    """mcp-host has approvers (ops): the opaque line waits for a person, who sees why; a denial ends it."""
    client = subprocess.Popen(
        ["ssh", "-F", str(oenv.ssh_config), "-J", "bastion", f"{oenv.login}@mcp-host", line],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:

        def pending() -> dict[str, Any] | None:
            rows = json.loads(oenv.bastion("approvals", "list", "--json").stdout)
            return next((row for row in rows if row["rule"] == "(opaque)"), None)

        request = wait_until(pending, "an approval request for the opaque line", interval=0.2)
        assert request["kind"] == "exec" and request["approvers"] == ["ops"]
        oenv.bastion("approvals", "deny", str(request["id"]), "--reason", "say what it runs")
        out, err = client.communicate(timeout=30)
        assert client.returncode == DENIED and out == b""
        assert b"denied by operator:" in err and b"say what it runs" in err
    finally:
        if client.poll() is None:
            client.kill()
            client.communicate(timeout=10)


def test_a_script_file_run_by_its_interpreter_is_visible_and_runs(oenv: BastionEnv) -> None:
    result = oenv.ssh("printf 'print(6*7)\\n' > /tmp/bastion-visible.py && python3 /tmp/bastion-visible.py")
    assert result.returncode == 0 and result.stdout == b"42\n", result.stderr


@pytest.mark.parametrize(
    "command", ["rm -rf", "rm -fr", "rm -r -f", "rm -Rfv", "rm --recursive --force", "/bin/rm -f -r --"]
)
def test_a_structured_exec_rule_matches_options_in_any_order_and_grouping(oenv: BastionEnv, command: str) -> None:
    kept = "/tmp/bastion-kept-" + command.replace(" ", "_").replace("/", "")
    assert oenv.ssh(f"mkdir -p {kept}/inside").returncode == 0
    result = oenv.ssh(f"{command} {kept}")
    assert result.returncode == DENIED and b"denied by rule no-rm-kept" in result.stderr, result.stderr
    assert oenv.ssh(f"test -d {kept}/inside").returncode == 0  # still there
    assert oenv.ssh(f"rm -r {kept}").returncode == 0  # without -f the rule does not apply
