"""Every refused approval attempt is evidence: the requester approving their own request, someone who is
not an approver, a decision on a request already decided, and one on a request that expired. Each is
refused in one line over `ssh bastion approve ID` and leaves an `approval.refused` entry in the audit log."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BastionEnv, running_env, wait_until

pytestmark = pytest.mark.e2e

RULES = """
[approvals]
timeout = "3s"

[[rules]]
name = "dev-works"
effect = "allow"
groups = ["dev"]

[[rules]]
name = "held"
effect = "approve"
exec = ["echo held*"]
approvers = ["ops"]
"""


@pytest.fixture(scope="module")
def aenv() -> Iterator[BastionEnv]:
    with running_env(RULES) as environment:
        yield environment


@pytest.fixture(scope="module")
def configs(aenv: BastionEnv) -> dict[str, Path]:
    """ssh configs for bob (ops: an approver) and dave (dev: not one); alice (dev) is the requester."""
    found = {"alice": aenv.ssh_config}
    for user, group in (("bob", "ops"), ("dave", "dev")):
        key = aenv.issue(user, user, "--group", group)
        config = aenv.root / f"{user}_ssh_config"
        config.write_text(aenv.ssh_config.read_text().replace(str(aenv.user_key), str(key)))
        found[user] = config
    return found


def approvers_command(config: Path, user: str, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ssh", "-F", str(config), f"{user}@bastion", *command], capture_output=True, text=True)


def held(aenv: BastionEnv, text: str) -> tuple[subprocess.Popen[bytes], int]:
    """alice's exec held for approval, and its request id once the bastion has stored it."""
    client = subprocess.Popen(
        ["ssh", "-F", str(aenv.ssh_config), "-J", "alice@bastion", f"{aenv.login}@mcp-host", text],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )

    def request_id() -> int | None:
        rows: list[dict[str, Any]] = json.loads(aenv.bastion("approvals", "list", "--all", "--json").stdout)
        return next((int(row["id"]) for row in rows if row["action"] == text), None)

    return client, wait_until(request_id, f"a request for {text!r}", interval=0.2)


def refused_entry(aenv: BastionEnv, request: int, approver: str) -> dict[str, Any]:
    entries = aenv.logged("approval.refused", lambda f: f["id"] == request and f["approver"] == approver)
    return entries[-1]


def test_own_request_and_not_an_approver_and_already_decided(aenv: BastionEnv, configs: dict[str, Path]) -> None:
    client, request = held(aenv, "echo held-once")
    try:
        own = approvers_command(configs["alice"], "alice", "approve", str(request))
        assert own.returncode == 1 and "their own request" in own.stderr, own.stderr
        assert "their own request" in refused_entry(aenv, request, "alice")["reason"]

        outsider = approvers_command(configs["dave"], "dave", "approve", str(request))
        assert outsider.returncode == 1 and "may not decide" in outsider.stderr, outsider.stderr
        assert "approvers are members of ops" in refused_entry(aenv, request, "dave")["reason"]

        approved = approvers_command(configs["bob"], "bob", "approve", str(request))
        assert approved.returncode == 0, approved.stderr
        out, _ = client.communicate(timeout=30)
        assert out == b"held-once\n"

        again = approvers_command(configs["bob"], "bob", "deny", str(request), "--reason", "changed my mind")
        assert again.returncode == 1 and "already approved" in again.stderr, again.stderr
        assert refused_entry(aenv, request, "bob")["reason"] == f"request {request} is already approved"
    finally:
        if client.poll() is None:
            client.kill()
        client.communicate(timeout=10)


def test_a_decision_on_an_expired_request_is_refused_and_audited(aenv: BastionEnv, configs: dict[str, Path]) -> None:
    client, request = held(aenv, "echo held-too-long")
    _, err = client.communicate(timeout=30)  # nobody decides: the request expires after 3 s, as a denial
    assert b"expired" in err, err
    late = approvers_command(configs["bob"], "bob", "approve", str(request))
    assert late.returncode == 1 and "expired" in late.stderr, late.stderr
    assert "expired" in refused_entry(aenv, request, "bob")["reason"]
