"""Interop with a certified OpenID provider: npm `oidc-provider` on loopback (installed from its lock
file), `bastion login` through its device flow and client credentials, then `ssh -J` with the result."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BIN, BastionEnv, running_env
from tests.oidc_provider_harness import OidcProvider, start_oidc_provider

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    running = start_oidc_provider(tmp_path_factory.mktemp("oidc-provider"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def ienv(provider: OidcProvider) -> Iterator[BastionEnv]:
    extra = f"""
[[identity.issuers]]
name = "corp"
issuer = "{provider.issuer}"
client_id = "{provider.device_client_id}"

[[identity.issuers]]
name = "agents"
issuer = "{provider.issuer}"
client_id = "{provider.workload_client_id}"
audience = "{provider.audience}"
kind = "workload"
username_prefix = "wl-"
"""
    with running_env(extra) as environment:
        yield environment


def bastion_login(ienv: BastionEnv, home: Path, *args: str) -> subprocess.Popen[str]:
    command = [str(BIN / "bastion"), "login", "-c", str(ienv.config), "--home", str(home), *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def device_login(ienv: BastionEnv, provider: OidcProvider, home: Path, account: str) -> tuple[int, str, str]:
    with bastion_login(ienv, home, "--issuer", "corp") as process:  # leaving the block closes its pipes
        try:
            assert process.stderr is not None
            shown = process.stderr.readline() + process.stderr.readline()
            code = re.search(r"confirm the code\s+(\S+)", shown)
            assert code, shown
            provider.approve_device(code.group(1), account)  # the person, in the provider's own pages
            out, err = process.communicate(timeout=60)
        finally:
            if process.poll() is None:  # a failed step above: not left polling the provider
                process.kill()
    return process.returncode, out, shown + err


def test_device_flow_with_oidc_provider_then_ssh_jump(ienv: BastionEnv, provider: OidcProvider, tmp_path: Path) -> None:
    home = tmp_path / "home"
    status, out, err = device_login(ienv, provider, home, "alice")
    assert status == 0, err
    assert "logged in as alice (groups: dev, approvers)" in out
    ran = subprocess.run(
        ["ssh", "-F", str(home / "ssh_config"), "-o", "BatchMode=yes", "-J", "bastion", f"{ienv.login}@mcp-host",
         "echo interop"],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert ran.returncode == 0 and ran.stdout == b"interop\n", ran.stderr
    issued = ienv.logged("cert.issued", lambda f: f["issuer"] == "oidc:corp")[-1]
    assert (issued["user"], issued["subject"]) == ("alice", "alice")


def test_an_account_whose_username_is_not_a_login_name_is_refused(
    ienv: BastionEnv, provider: OidcProvider, tmp_path: Path
) -> None:
    status, _, err = device_login(ienv, provider, tmp_path / "home", "mallory")
    assert status == 1
    assert "is not a valid login name" in err.splitlines()[-1]
    assert not (tmp_path / "home" / "id_ed25519-cert.pub").exists()
    assert ienv.logged("login.failed", lambda f: "not a valid login name" in f["reason"])


def test_client_credentials_jwt_access_token_then_ssh_jump(
    ienv: BastionEnv, provider: OidcProvider, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_text(provider.workload_client_secret)
    home = tmp_path / "agent"
    process = bastion_login(
        ienv, home, "--issuer", "agents", "--client-credentials", "--client-secret-file", str(secret)
    )
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "logged in as wl-ci-agent (groups: ci)" in out
    ran = subprocess.run(
        ["ssh", "-F", str(home / "ssh_config"), "-o", "BatchMode=yes", f"{ienv.login}@mcp-host", "echo agent"],
        capture_output=True,
        timeout=60,
    )
    assert ran.returncode == 0 and ran.stdout == b"agent\n", ran.stderr
    issued = ienv.logged("cert.issued", lambda f: f["user"] == "wl-ci-agent")[-1]
    assert issued["token_type"] == "access_token" and issued["valid_before"] - issued["valid_after"] <= 15 * 60 + 300
