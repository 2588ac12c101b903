"""End to end: what the bastion must refuse, with the real OpenSSH client, and that it is logged."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import asyncssh
import pytest

from tests.conftest import BastionEnv

pytestmark = pytest.mark.e2e


def _ssh_with(env: BastionEnv, key: Path, cert: Path | None, *args: str) -> subprocess.CompletedProcess[bytes]:
    options = ["-o", f"IdentityFile={key}", "-o", f"CertificateFile={cert or '/dev/null'}"]
    command = [
        "ssh",
        "-F",
        "/dev/null",
        *options,
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        f"UserKnownHostsFile={env.root / 'client_known_hosts'}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-p",
        str(env.port),
        "alice@127.0.0.1",
        *args,
    ]
    return subprocess.run(command, capture_output=True, timeout=30)


def _signed(
    env: BastionEnv,
    name: str,
    ca: asyncssh.SSHKey,
    principals: list[str],
    valid_after: int,
    valid_before: int,
    serial: int = 1,
) -> Path:
    key = asyncssh.generate_private_key("ssh-ed25519")
    path = env.root / name
    key.write_private_key(str(path))
    path.chmod(0o600)
    cert = ca.generate_user_certificate(
        key,
        f"user=alice serial={serial}",
        serial=serial,
        principals=principals,
        valid_after=valid_after,
        valid_before=valid_before,
    )
    cert.write_certificate(str(path) + "-cert.pub")
    return path


@pytest.mark.parametrize("destination", ["not-in-inventory:22", "127.0.0.1:22", "localhost:22", "mcp-host:2222"])
def test_destinations_outside_the_inventory_are_refused(env: BastionEnv, destination: str) -> None:
    since = time.time()
    result = subprocess.run(
        ["ssh", "-F", str(env.ssh_config), "-W", destination, "bastion"], capture_output=True, timeout=30, input=b""
    )
    assert result.returncode != 0
    assert b"not a host in this bastion's inventory" in result.stderr
    env.logged("channel.refused", lambda r: r["destination"] == destination and r["user"] == "alice", since=since)


def test_the_bastions_own_port_is_refused(env: BastionEnv) -> None:
    result = subprocess.run(
        ["ssh", "-F", str(env.ssh_config), "-W", f"127.0.0.1:{env.port}", "bastion"],
        capture_output=True,
        timeout=30,
        input=b"",
    )
    assert result.returncode != 0 and b"not a host in this bastion's inventory" in result.stderr


def test_ssh_to_the_bastion_itself_explains_what_to_do(env: BastionEnv) -> None:
    result = subprocess.run(["ssh", "-F", str(env.ssh_config), "bastion"], capture_output=True, timeout=30)
    assert result.returncode == 1
    assert b"ssh -J" in result.stderr and b"mcp-host" in result.stderr


def test_plain_key_without_certificate_is_refused(env: BastionEnv) -> None:
    since = time.time()
    result = _ssh_with(env, env.user_key, None, "true")
    assert result.returncode == 255 and b"Permission denied" in result.stderr
    env.logged("auth.failed", lambda r: "plain keys are not accepted" in str(r["reasons"]), since=since)


def test_certificate_from_a_foreign_ca_is_refused(env: BastionEnv) -> None:
    foreign = asyncssh.generate_private_key("ssh-ed25519")
    now = int(time.time())
    key = _signed(env, "foreign", foreign, ["alice"], now - 60, now + 3600)
    since = time.time()
    result = _ssh_with(env, key, Path(f"{key}-cert.pub"), "true")
    assert result.returncode == 255 and b"Permission denied" in result.stderr
    env.logged("auth.failed", lambda r: "not signed by this bastion's user CA" in str(r["reasons"]), since=since)


def _user_ca(env: BastionEnv) -> asyncssh.SSHKey:
    return asyncssh.read_private_key(str(env.root / "state" / "user_ca"))


def test_expired_certificate_is_refused(env: BastionEnv) -> None:
    now = int(time.time())
    key = _signed(env, "expired", _user_ca(env), ["alice"], now - 7200, now - 3600)
    since = time.time()
    assert _ssh_with(env, key, Path(f"{key}-cert.pub"), "true").returncode == 255
    env.logged("auth.failed", lambda r: "expired" in str(r["reasons"]), since=since)


def test_not_yet_valid_certificate_is_refused(env: BastionEnv) -> None:
    now = int(time.time())
    key = _signed(env, "future", _user_ca(env), ["alice"], now + 3600, now + 7200)
    since = time.time()
    assert _ssh_with(env, key, Path(f"{key}-cert.pub"), "true").returncode == 255
    env.logged("auth.failed", lambda r: "not yet valid" in str(r["reasons"]), since=since)


def test_certificate_without_principals_is_refused(env: BastionEnv) -> None:
    now = int(time.time())
    key = _signed(env, "noprincipals", _user_ca(env), [], now - 60, now + 3600)
    since = time.time()
    assert _ssh_with(env, key, Path(f"{key}-cert.pub"), "true").returncode == 255
    env.logged("auth.failed", lambda r: "no principals" in str(r["reasons"]), since=since)


def test_certificate_signed_by_the_ca_but_never_issued_is_refused(env: BastionEnv) -> None:
    now = int(time.time())
    key = _signed(env, "unrecorded", _user_ca(env), ["alice"], now - 60, now + 3600, serial=424242)
    since = time.time()
    assert _ssh_with(env, key, Path(f"{key}-cert.pub"), "true").returncode == 255
    env.logged("auth.failed", lambda r: "was not issued by this bastion" in str(r["reasons"]), since=since)


def test_target_with_wrong_host_key_is_refused(env: BastionEnv) -> None:
    since = time.time()
    result = env.ssh("echo should-not-run", host="wrong-key-host")
    assert result.returncode == 255
    assert b"host key of wrong-key-host does not match" in result.stderr
    env.logged("upstream.failed", lambda r: r["target"] == "wrong-key-host", since=since)


def test_pinned_host_key_and_key_credential_hosts_work(env: BastionEnv) -> None:
    assert env.ssh("echo pinned", host="pinned-host").stdout == b"pinned\n"
    assert env.ssh("echo with-key", host="key-host").stdout == b"with-key\n"


def test_login_not_in_the_hosts_logins_is_refused(env: BastionEnv) -> None:
    since = time.time()
    result = env.ssh("true", login="root")
    assert result.returncode == 255
    assert b"login 'root' is not allowed on mcp-host" in result.stderr
    env.logged("login.refused", lambda r: r["login"] == "root", since=since)


def test_inner_host_key_is_a_certificate_for_the_host_name(env: BastionEnv) -> None:
    # Only the @cert-authority line is in known_hosts; StrictHostKeyChecking yes passes for the
    # name the user typed and fails for a name the certificate does not carry.
    assert env.ssh("true").returncode == 0
    result = subprocess.run(
        [
            "ssh",
            "-F",
            str(env.ssh_config),
            "-o",
            "HostKeyAlias=other-host",
            "-J",
            "bastion",
            f"{env.login}@mcp-host",
            "true",
        ],
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 255 and b"Host key verification failed" in result.stderr


def test_passwords_and_keyboard_interactive_are_not_offered(env: BastionEnv) -> None:
    result = subprocess.run(
        [
            "ssh",
            "-F",
            str(env.ssh_config),
            "-o",
            "PreferredAuthentications=password,keyboard-interactive",
            "bastion",
            "true",
        ],
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 255
    assert b"Permission denied (publickey)" in result.stderr
