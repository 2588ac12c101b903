"""OIDC login end to end: the development IdP, `bastion login`, `ssh login@bastion`, revocation.

Real parts throughout: `bastion dev-idp`'s provider over HTTP on loopback, `bastion serve`, the
OpenSSH client (driven through a pty where a person would type), and Debian's sshd as the target.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pty
import re
import select
import stat
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from bastion.demo.devidp import Client, DevIdp, User, serve_dev_idp
from tests.conftest import BIN, BastionEnv, running_env, spawned, wait_until

pytestmark = pytest.mark.e2e

SECRET = "s3cret-for-ci-runner"
AUDIENCE = "https://bastion.test"


@pytest.fixture(scope="module")
def idp_url() -> Iterator[str]:
    users = [User("alice", ("dev", "approvers")), User("bob", ("dev",))]
    clients = [
        Client("bastion"),
        Client(
            "ci-runner",
            secret=SECRET,
            grant_types=frozenset({"client_credentials"}),
            groups=("ci",),
            audience=AUDIENCE,
        ),
    ]
    idp = DevIdp(users, clients, auto_approve="alice", device_interval=1)
    with serve_dev_idp(idp, host="127.0.0.1", port=0) as running:
        yield running.url


@pytest.fixture(scope="module")
def lenv(idp_url: str) -> Iterator[BastionEnv]:
    extra = f"""
[approvals]
approver_groups = ["approvers", "ci"]  # "ci" on purpose: a workload in an approver group still may not approve

[[identity.issuers]]
name = "dev"
issuer = "{idp_url}"
client_id = "bastion"

[[identity.issuers]]
name = "ci"
issuer = "{idp_url}"
client_id = "ci-runner"
audience = "{AUDIENCE}"
kind = "workload"
username_prefix = "wl-"
leeway = "2s"
"""
    with running_env(extra) as environment:
        yield environment


def login(lenv: BastionEnv, home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    command = [str(BIN / "bastion"), "login", "-c", str(lenv.config), "--home", str(home), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def ssh_with(home: Path, destination: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Plain ssh with nothing but the ssh config `bastion login` wrote (ProxyJump included)."""
    command = ["ssh", "-F", str(home / "ssh_config"), "-o", "BatchMode=yes", destination, *args]
    return subprocess.run(command, capture_output=True, timeout=60)


def cert_field(cert: Path, name: str) -> str:
    text = subprocess.run(["ssh-keygen", "-L", "-f", str(cert)], capture_output=True, text=True, check=True).stdout
    match = re.search(rf"^\s*{name}:\s*(.*?)$(?:\n\s{{16,}}(.*?)$)?", text, re.M)
    assert match, text
    return " ".join(g.strip() for g in match.groups() if g)


def test_device_flow_login_then_plain_ssh_through_the_bastion(lenv: BastionEnv, tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = login(lenv, home, "--issuer", "dev")
    assert result.returncode == 0, result.stderr
    assert "To log in, open" in result.stderr and "logged in as alice (groups: dev, approvers)" in result.stdout
    for name in ("id_ed25519", "id_ed25519-cert.pub", "ssh_config", "known_hosts", "login.json"):
        assert stat.S_IMODE((home / name).stat().st_mode) == 0o600, name
    assert cert_field(home / "id_ed25519-cert.pub", "Principals") == "alice"
    ran = ssh_with(home, f"{lenv.login}@mcp-host", "echo via-login")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == b"via-login\n"
    jumped = subprocess.run(
        ["ssh", "-F", str(home / "ssh_config"), "-J", "bastion", f"{lenv.login}@mcp-host", "true"],
        capture_output=True,
        timeout=60,
    )
    assert jumped.returncode == 0, jumped.stderr
    session = lenv.store().session(lenv.latest_session("echo via-login"))
    assert session is not None and session.groups == ("dev", "approvers")
    issued = [e["fields"] for e in lenv.store().audit_log("cert.issued") if e["fields"]["user"] == "alice"][-1]
    assert issued["issuer"] == "oidc:dev" and issued["subject"] == "alice" and issued["source"].startswith("127.0.0.1:")
    assert issued["valid_before"] - issued["valid_after"] <= 8 * 3600 + 300

    status = subprocess.run(
        [str(BIN / "bastion"), "login", "--status", "--home", str(home)], capture_output=True, text=True
    )
    assert (
        status.returncode == 0 and "alice (groups: dev, approvers)" in status.stdout and "valid for 7h" in status.stdout
    )


def test_status_of_an_expired_certificate_says_to_log_in_again(lenv: BastionEnv, tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert login(lenv, home, "--issuer", "dev").returncode == 0
    key = home / "id_ed25519"
    # The login's key, certified by the bastion's user CA for an hour that is over: expired, with no wait.
    user_ca = asyncssh.read_private_key(str(lenv.root / "state" / "user_ca"))
    now = int(time.time())
    expired = user_ca.generate_user_certificate(
        asyncssh.read_private_key(str(key)), "user=alice", principals=["alice"],
        valid_after=now - 2 * 3600, valid_before=now - 3600,
    )  # fmt: skip
    expired.write_certificate(f"{key}-cert.pub")
    status = subprocess.run(
        [str(BIN / "bastion"), "login", "--status", "--home", str(home)], capture_output=True, text=True
    )
    assert status.returncode == 1
    assert "expired" in status.stdout and "log in again" in status.stdout


def test_workload_client_credentials_gets_a_short_certificate(lenv: BastionEnv, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text(SECRET)
    home = tmp_path / "ci"
    result = login(lenv, home, "--issuer", "ci", "--client-credentials", "--client-secret-file", str(secret), "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["user"] == "wl-ci-runner" and answer["groups"] == ["ci"]
    valid = cert_field(home / "id_ed25519-cert.pub", "Valid")
    start, end = re.findall(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", valid)
    seconds = time.mktime(time.strptime(end, "%Y-%m-%dT%H:%M:%S")) - time.mktime(
        time.strptime(start, "%Y-%m-%dT%H:%M:%S")
    )
    assert 14 * 60 <= seconds <= 16 * 60 + 60  # workload_ttl (15m), not user_ttl
    ran = ssh_with(home, f"{lenv.login}@mcp-host", "echo from-ci")
    assert ran.returncode == 0 and ran.stdout == b"from-ci\n", ran.stderr
    for command in (("approvals", "list"), ("approve", "1")):
        refused = ssh_with(home, "bastion", *command)
        assert refused.returncode == 1 and b"approvals are decided by people" in refused.stderr, refused.stderr
        attempt = " ".join(command)
        lenv.logged(  # every refusal is evidence: the workload's attempt is in the audit log
            "approval.refused",
            lambda f, attempt=attempt: f["user"] == "wl-ci-runner" and f["command"] == attempt,  # type: ignore[misc]
        )


def test_a_bad_token_file_is_refused_in_one_line_and_audited(lenv: BastionEnv, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.")
    result = login(lenv, tmp_path / "h", "--id-token-file", str(token))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "issuer 'x' is not trusted" in result.stderr
    failures = lenv.logged("login.failed", lambda f: "'x' is not trusted" in f["reason"])
    assert failures[-1]["user"] == "token"
    assert not (tmp_path / "h" / "id_ed25519-cert.pub").exists()


def test_a_bastion_whose_host_certificate_is_not_from_the_given_ca_gets_no_token(
    lenv: BastionEnv, tmp_path: Path
) -> None:
    other = tmp_path / "other_ca"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    store = lenv.store()
    before = len(store.audit_log("login.failed")) + len(store.audit_log("login.ok"))
    result = login(lenv, tmp_path / "h", "--issuer", "dev", "--ca", f"{other}.pub")
    assert result.returncode == 1
    assert "refusing to send the token" in result.stderr
    # A login the bastion does see, after: once its entry is committed, so is anything logged before it.
    marker = f"sync-{os.getpid()}-{time.monotonic_ns()}"
    token = tmp_path / "sync-token"
    token.write_text(_unsigned_token({"iss": marker}))
    assert login(lenv, tmp_path / "sync", "--id-token-file", str(token)).returncode == 1
    lenv.logged("login.failed", lambda f: marker in f["reason"])
    after = len(store.audit_log("login.failed")) + len(store.audit_log("login.ok"))
    assert after == before + 1  # the marker's entry alone: the bastion never saw the first login


def _unsigned_token(claims: dict[str, object]) -> str:
    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part(claims)}."


def test_browser_login_with_pkce_on_a_loopback_redirect(lenv: BastionEnv, tmp_path: Path) -> None:
    home = tmp_path / "home"
    command = [str(BIN / "bastion"), "login", "-c", str(lenv.config), "--home", str(home), "--issuer", "dev"]
    with spawned([*command, "--browser", "--no-open"], stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert process.stderr is not None
        line = process.stderr.readline().decode()
        url = line.split("open", 1)[1].strip()
        assert "code_challenge_method=S256" in url and "nonce=" in url
        with urllib.request.urlopen(url, timeout=10) as response:  # the "browser": auto-approve redirects to loopback
            assert b"Login received" in response.read()
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert b"logged in as alice" in out


def test_ssh_login_at_bastion_with_nothing_but_ssh(lenv: BastionEnv, tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    known_hosts = lenv.root / "client_known_hosts"
    command = [
        "ssh", "-tt", "-F", "/dev/null", "-p", str(lenv.port), "-i", str(key), "-o", "IdentitiesOnly=yes",
        "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes", "login@127.0.0.1",
    ]  # fmt: skip
    output = drive_pty(command, answer_after=b"Press Enter", timeout=60)
    text = output.decode(errors="replace")
    assert "To log in, open" in text and "confirm the code" in text
    assert "logged in as alice" in text
    match = re.search(r"echo '(ssh-ed25519-cert-v01@openssh.com [^']+)' > ~/.ssh/id_ed25519-cert.pub", text)
    assert match, text
    assert "echo '@cert-authority " in text
    cert = tmp_path / "id_ed25519-cert.pub"
    cert.write_text(match.group(1) + "\n")
    assert cert_field(cert, "Principals") == "alice"
    assert cert_field(cert, "Public key").split()[-1] == fingerprint(f"{key}.pub")
    ran = subprocess.run(
        ["ssh", "-F", str(lenv.ssh_config), "-o", f"IdentityFile={key}", "-o", f"CertificateFile={cert}",
         "-J", "alice@bastion", f"{lenv.login}@mcp-host", "echo ssh-only"],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert ran.returncode == 0 and ran.stdout == b"ssh-only\n", ran.stderr


def fingerprint(pub: str) -> str:
    out = subprocess.run(["ssh-keygen", "-l", "-f", pub], capture_output=True, text=True, check=True).stdout
    return out.split()[1]


def drive_pty(command: list[str], answer_after: bytes, timeout: float) -> bytes:
    """Run a command on a pty like a person: press Enter once `answer_after` shows, collect everything."""
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(command[0], command)
    output, answered, deadline = b"", False, time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                output += chunk
            if not answered and answer_after in output:
                os.write(fd, b"\r")
                answered = True
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(fd)
    return output


def test_revoking_a_user_ends_their_live_session_and_refuses_them(lenv: BastionEnv) -> None:
    key = lenv.issue("dora", "dora")
    serial = int(cert_field(Path(f"{key}-cert.pub"), "Serial"))
    config = lenv.root / "dora_ssh_config"  # -J does not pass -o options on to the jump's ssh
    config.write_text(lenv.ssh_config.read_text().replace(str(lenv.user_key), str(key)))
    ssh = ["ssh", "-F", str(config)]
    command = [*ssh, "-J", "dora@bastion", f"{lenv.login}@mcp-host", "echo started; sleep 30"]
    with spawned(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as live:
        assert live.stdout is not None
        assert live.stdout.readline() == b"started\n"
        revoked = lenv.bastion("cert", "revoke", "--user", "dora", "--reason", "left the team")
        assert "revoked serial" in revoked.stdout
        _, err = live.communicate(timeout=20)  # ended by the revocation, long before its `sleep 30` would end
    assert live.returncode != 0 and b"certificate revoked" in err
    again = subprocess.run(
        [*ssh, "-J", "dora@bastion", f"{lenv.login}@mcp-host", "true"], capture_output=True, timeout=30
    )
    assert again.returncode == 255
    assert lenv.logged("cert.revoked", lambda f: f["user"] == "dora")[-1]["reason"] == "left the team"
    enforced = lenv.logged("cert.revocation_enforced", lambda f: serial in f["serials"])[-1]
    assert enforced["sessions_ended"] == 1
    session = lenv.store().session(lenv.latest_session("echo started; sleep 30"))
    assert session is not None and session.end_reason == "session ended: certificate revoked"
    refusals = lenv.logged("auth.failed", lambda f: f["user"] == "dora")
    assert any("has been revoked" in reason for reason in refusals[-1]["reasons"])


def test_ssh_config_prints_and_writes_the_block(lenv: BastionEnv, tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert login(lenv, home, "--issuer", "dev").returncode == 0
    (home / "ssh_config").unlink()
    printed = subprocess.run(
        [str(BIN / "bastion"), "ssh-config", "--home", str(home)], capture_output=True, text=True, check=True
    ).stdout
    assert "Host bastion\n" in printed and "ProxyJump bastion" in printed and "@cert-authority " in printed
    subprocess.run(
        [str(BIN / "bastion"), "ssh-config", "--home", str(home), "--write"], check=True, capture_output=True
    )
    assert (home / "ssh_config").read_text() in printed
    assert ssh_with(home, f"{lenv.login}@mcp-host", "true").returncode == 0


def test_revoke_by_serial_and_its_errors(lenv: BastionEnv) -> None:
    key = lenv.issue("erin", "erin")
    serial = cert_field(Path(f"{key}-cert.pub"), "Serial")
    config = lenv.root / "erin_ssh_config"
    config.write_text(lenv.ssh_config.read_text().replace(str(lenv.user_key), str(key)))
    ssh = ["ssh", "-F", str(config), "-J", "erin@bastion", f"{lenv.login}@mcp-host", "true"]
    assert subprocess.run(ssh, capture_output=True, timeout=30).returncode == 0
    assert lenv.bastion("cert", "revoke", "--serial", serial).stdout == f"revoked serial {serial} of erin\n"
    assert subprocess.run(ssh, capture_output=True, timeout=30).returncode == 255
    again = lenv.bastion("cert", "revoke", "--serial", serial, check=False)
    assert again.returncode == 1 and "no unrevoked certificate" in again.stderr
    unknown = lenv.bastion("cert", "revoke", "--serial", "12345", check=False)
    assert (
        unknown.returncode == 1 and unknown.stderr.count("\n") == 1 and "no certificate with serial" in unknown.stderr
    )
    both = lenv.bastion("cert", "revoke", "--serial", serial, "--user", "erin", check=False)
    assert both.returncode == 1 and "exactly one of" in both.stderr


def test_revoking_a_user_refuses_their_older_tokens_but_not_a_fresh_login(
    lenv: BastionEnv, idp_url: str, tmp_path: Path
) -> None:
    form = urllib.parse.urlencode(
        {"grant_type": "client_credentials", "client_id": "ci-runner", "client_secret": SECRET}
    ).encode()
    with urllib.request.urlopen(f"{idp_url}/token", data=form, timeout=10) as response:
        old_token = json.loads(response.read())["access_token"]
    token_file = tmp_path / "token"
    token_file.write_text(old_token)
    secret = tmp_path / "secret"
    secret.write_text(SECRET)
    revoked = lenv.bastion("cert", "revoke", "--user", "wl-ci-runner")
    assert "tokens issued before now will not get a new certificate" in revoked.stdout
    refused = login(lenv, tmp_path / "old", "--issuer", "ci", "--id-token-file", str(token_file))
    assert refused.returncode == 1 and "was revoked after this token was issued" in refused.stderr
    assert refused.stderr.count("\n") == 1
    # A token issued within the issuer's leeway (2s here) after a revocation is refused too: a fresh one
    # is one whose `iat` (whole seconds, from the IdP's clock, which is ours) is past the revocation plus
    # that leeway. The bastion keeps no clock a test can set, so this waits until such a token can be had.
    revoked_at = lenv.store().user_revoked_at("wl-ci-runner")
    assert revoked_at is not None
    wait_until(lambda: int(time.time()) - 2 > revoked_at, "the revocation to be older than the leeway")
    fresh = login(lenv, tmp_path / "new", "--issuer", "ci", "--client-credentials", "--client-secret-file", str(secret))
    assert fresh.returncode == 0, fresh.stderr
    assert lenv.logged("cert.revoked", lambda f: f["user"] == "wl-ci-runner")


def test_a_token_connection_open_across_a_revocation_gets_no_certificate(lenv: BastionEnv, idp_url: str) -> None:
    """`ssh token@bastion` logged in before `cert revoke --user`, asking for its certificate after."""
    import asyncio

    from bastion.identity.login import _TokenClient

    form = urllib.parse.urlencode(
        {"grant_type": "client_credentials", "client_id": "ci-runner", "client_secret": SECRET}
    ).encode()
    with urllib.request.urlopen(f"{idp_url}/token", data=form, timeout=10) as response:
        token = json.loads(response.read())["access_token"]
    public_key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    host_ca = (lenv.root / "state" / "host_ca.pub").read_text().strip()

    async def run() -> asyncssh.SSHCompletedProcess:
        known = asyncssh.import_known_hosts(f"@cert-authority * {host_ca}\n")
        async with asyncssh.connect(
            "127.0.0.1", lenv.port, username="token", known_hosts=known, client_factory=lambda: _TokenClient(token),
            client_keys=None, agent_path=None, preferred_auth="keyboard-interactive", config=None,
        ) as conn:  # fmt: skip
            await asyncio.to_thread(lenv.bastion, "cert", "revoke", "--user", "wl-ci-runner")
            return await conn.run("certificate --json", input=public_key + "\n", check=False, timeout=30)

    result = asyncio.run(run())
    assert result.exit_status == 1 and "was revoked after this token was issued" in str(result.stderr)
    assert "certificate" not in str(result.stdout)


def test_revoke_refuses_a_user_name_that_is_not_a_login(lenv: BastionEnv) -> None:
    refused = lenv.bastion("cert", "revoke", "--user", "Alice", check=False)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1 and "expected a login name" in refused.stderr
