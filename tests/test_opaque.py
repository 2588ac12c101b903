"""Opaque command lines: which lines the bastion cannot read, and how policy fails closed on them."""

from __future__ import annotations

import pytest

from bastion.control.actions import Exec, ShellLine, Subject
from bastion.control.command_line import parse
from bastion.control.config import Rule
from bastion.control.opaque import why_opaque
from bastion.control.policy import OPAQUE_RULE, Policy

ALICE = Subject("alice", ("dev",), "prod1", {}, "mcp")
ALLOW_ALL = Rule(name="allow-all", effect="allow")
NO_REBOOT = Rule(name="no-reboot", effect="deny", exec=("reboot*", "*/reboot*"))
HOLD_RESTARTS = Rule(name="restarts", effect="approve", exec=("systemctl restart *",), approvers=("ops",))


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("/usr/sbin/re\\\nboot --help", "backslash-newline"),
        ("echo /usr/sbin/reboot --help | sh", "sh runs the code it reads from its input"),
        ("bash <<< '/usr/sbin/reboot --help'", "bash runs code from a redirection"),
        ("sh <(echo reboot)", "sh runs code from"),
        ("python3 -c 'import os; os.system(\"reboot\")'", "python3 -c runs code"),
        ("perl -le 'system q(reboot)'", "perl -le runs code"),
        ("node -e 'x'", "node -e runs code"),
        ("bash -o pipefail -c 'reboot'", "bash -c runs code"),
        ("sudo sh -c 'reboot'", "sh -c runs code"),
        ("find / -name x -exec sh -c 'reboot' \\;", "sh -c runs code"),
        ("eval re''boot", "eval runs its arguments"),
        ("source ./x.sh", "source runs"),
        (". ./x.sh", "runs a file's commands"),
        ("trap 'reboot' EXIT", "trap runs code"),
        ("coproc reboot", "coproc"),
        ("alias ls=reboot", "alias"),
        ("hash -p /usr/sbin/reboot ls", "hash -p"),
        ("$CMD --help", "an expansion"),
        ("`echo reboot`", "an expansion"),
        ("/usr/sbin/re*t", "an expansion"),
        ("echo reboot | xargs -I{} {}", "an expansion"),
        ("PATH=/tmp/evil:$PATH ls", "sets PATH"),
        ("export LD_PRELOAD=/tmp/x.so", "sets LD_PRELOAD"),
        ("awk 'BEGIN{system(\"reboot\")}'", "awk runs the program text"),
        ("cat \"unclosed", "do not parse"),
        ("python3", "reads from its input"),
    ],
)
def test_lines_whose_programs_cannot_be_told_are_opaque(line: str, why: str) -> None:
    reasons = why_opaque(parse(line))
    assert any(why in reason for reason in reasons), reasons


@pytest.mark.parametrize(
    "line",
    ["ls -l /etc", "python3 script.py --verbose", "bash deploy.sh -c config", "python3 -m http.server 8000",
     "awk -f report.awk data", "cat <<EOF\nhello\nEOF", "git log | head -5", "re''boot", "node app.js",
     "sort data > out 2>&1", "echo $HOME", "FOO=1 make test", "ruby -I lib app.rb", "# only a comment", ""],
)  # fmt: skip
def test_a_named_program_running_its_own_file_is_visible(line: str) -> None:
    assert why_opaque(parse(line)) == ()


def test_an_opaque_line_is_held_where_deny_or_approve_rules_apply() -> None:
    policy = Policy([ALLOW_ALL, NO_REBOOT, HOLD_RESTARTS])
    decision = policy.decide(ALICE, Exec("echo cmVib290 | base64 -d | sh"))  # no deny pattern sees "reboot"
    assert (decision.effect, decision.rule, decision.approvers) == ("approve", OPAQUE_RULE, ("ops",))
    assert decision.message.startswith("the bastion cannot tell what this runs: sh runs the code")
    assert decision.opaque and "no-reboot" in decision.matched
    assert policy.decide(ALICE, ShellLine("python3 -c 'print(1)'")).effect == "approve"  # shell lines too


def test_without_approvers_an_opaque_line_is_denied_and_with_approver_groups_held() -> None:
    assert Policy([ALLOW_ALL, NO_REBOOT]).decide(ALICE, Exec("sh -c 'reboot'")).effect == "deny"
    held = Policy([ALLOW_ALL, NO_REBOOT], approver_groups=("sre",)).decide(ALICE, Exec("$X"))
    assert (held.effect, held.rule, held.approvers) == ("approve", OPAQUE_RULE, ())  # the queue uses sre


def test_a_deny_that_hits_still_wins_and_visible_lines_are_unchanged() -> None:
    policy = Policy([ALLOW_ALL, NO_REBOOT, HOLD_RESTARTS])
    hit = policy.decide(ALICE, Exec("sudo sh -c 'reboot'"))  # the deny sees inside sh -c: it decides
    assert (hit.effect, hit.rule) == ("deny", "no-reboot")
    assert policy.decide(ALICE, Exec("ls -l")).effect == "allow"
    assert policy.decide(ALICE, Exec("python3 script.py")).effect == "allow"


def test_where_no_deny_or_approve_rule_applies_an_opaque_line_is_decided_as_any() -> None:
    assert Policy([ALLOW_ALL]).decide(ALICE, Exec("sh -c 'anything'")).effect == "allow"
    only_bob = Rule(name="bob-no-reboot", effect="deny", users=("bob",), exec=("reboot*",))
    assert Policy([ALLOW_ALL, only_bob]).decide(ALICE, Exec("sh -c 'anything'")).effect == "allow"


@pytest.mark.parametrize(("setting", "effect"), [("approve", "approve"), ("deny", "deny"), ("allow", "allow")])
def test_the_opaque_setting_chooses(setting: str, effect: str) -> None:
    policy = Policy([ALLOW_ALL, NO_REBOOT, HOLD_RESTARTS], opaque=setting)  # type: ignore[arg-type]
    assert policy.decide(ALICE, Exec("eval $(echo cmVib290 | base64 -d)")).effect == effect


@pytest.mark.parametrize("line", ["!!", "sudo !!", '$(!-2)', "echo \"!$\"", "^touch^rm"])
def test_history_expansion_in_a_typed_line_is_opaque(line: str) -> None:
    assert any("history expansion" in reason for reason in why_opaque(parse(line), interactive=True))
    assert not any("history expansion" in reason for reason in why_opaque(parse(line)))  # exec: no history


@pytest.mark.parametrize("line", ["echo 'hi!'", "[ ! -f x ]", "x != y", "echo hi!", "echo \\!x"])
def test_an_exclamation_mark_history_does_not_take_is_not_opaque(line: str) -> None:
    assert not any("history" in reason for reason in why_opaque(parse(line), interactive=True))


def test_prompt_assignments_are_opaque() -> None:
    assert any("PS1" in reason for reason in why_opaque(parse("PS1='$(reboot)'")))
    assert why_opaque(parse("FOO=1")) == ()
