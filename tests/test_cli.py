"""The command line with bad input: one line saying what is wrong, a non-zero exit, nothing written."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import BIN, run_bastion, wait_until


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "bastion.toml"
    path.write_text('[server]\nlisten = "127.0.0.1:2999"\nstate_dir = "state"\n')
    run_bastion("init", "-c", str(path))
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "key")], check=True)
    return path


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_init_is_idempotent_and_prints_the_lines_clients_and_targets_need(config: Path) -> None:
    out = run_bastion("init", "-c", str(config)).stdout
    assert "already initialised" in out
    assert "@cert-authority * ssh-ed25519 " in out and "TrustedUserCAKeys" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--user", "Alice Smith"], "--user: expected a login name"),
        (["--user", "alice", "--ttl", "forever"], "--ttl: expected a duration"),
        (["--user", "alice", "--ttl", "48h"], "longer than [certificates] max_ttl"),
    ],
)
def test_cert_issue_refuses_bad_input(config: Path, args: list[str], message: str) -> None:
    result = run_bastion(
        "cert", "issue", "-c", str(config), *args, "--pubkey", str(config.parent / "key.pub"), check=False
    )
    assert message in one_line_error(result)
    assert not (config.parent / "key-cert.pub").exists()


def test_cert_issue_refuses_a_file_that_is_not_a_public_key(config: Path) -> None:
    bogus = config.parent / "bogus.pub"
    bogus.write_text("not a key\n")
    result = run_bastion("cert", "issue", "-c", str(config), "--user", "alice", "--pubkey", str(bogus), check=False)
    assert "is not an OpenSSH public key" in one_line_error(result)


def test_cert_issue_writes_a_certificate_openssh_accepts(config: Path) -> None:
    run_bastion(
        "cert",
        "issue",
        "-c",
        str(config),
        "--user",
        "alice",
        "--group",
        "ops",
        "--pubkey",
        str(config.parent / "key.pub"),
        "--ttl",
        "1h",
    )
    listing = subprocess.run(
        ["ssh-keygen", "-L", "-f", str(config.parent / "key-cert.pub")], capture_output=True, text=True, check=True
    ).stdout
    assert "Principals: \n                alice" in listing
    assert 'Key ID: "user=alice serial=' in listing
    assert "permit-pty" in listing and "permit-port-forwarding" in listing
    assert "permit-agent-forwarding" not in listing
    log = run_bastion("audit", "log", "-c", str(config), "--type", "cert.issued").stdout
    assert "user=alice" in log and "ops" in log


def test_unknown_session_and_bad_bundle(config: Path) -> None:
    assert "no session 'nope'" in one_line_error(run_bastion("audit", "export", "-c", str(config), "nope", check=False))
    bundle = config.parent / "bundle.json"
    bundle.write_text("{not json")
    assert "FAILED" in one_line_error(run_bastion("audit", "verify", "--bundle", str(bundle), check=False))


def test_configuration_errors_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bastion.toml"
    path.write_text('[server]\nlisten = "nowhere"\n')
    line = one_line_error(run_bastion("sessions", "list", "-c", str(path), check=False))
    assert line.startswith(f"bastion: {path}: server.listen: expected")


def test_a_world_readable_ca_key_is_refused(config: Path) -> None:
    (config.parent / "state" / "user_ca").chmod(0o644)
    result = run_bastion(
        "cert", "issue", "-c", str(config), "--user", "alice", "--pubkey", str(config.parent / "key.pub"), check=False
    )
    assert "chmod 600" in one_line_error(result)


def test_serve_initialises_an_empty_state_directory(tmp_path: Path) -> None:
    import signal
    import socket

    from bastion.demo.targets import free_port

    port = free_port()
    path = tmp_path / "bastion.toml"
    path.write_text(f'[server]\nlisten = "127.0.0.1:{port}"\nstate_dir = "fresh-state"\n')
    process = subprocess.Popen(
        [str(BIN / "bastion"), "serve", "-c", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:

        def banner() -> bytes | None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                    return sock.recv(64)
            except OSError:  # not listening yet
                return None

        assert wait_until(banner, f"bastion serve to listen on port {port}", timeout=15).startswith(b"SSH-2.0-")
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=15)
    state = tmp_path / "fresh-state"
    assert (state.stat().st_mode & 0o777) == 0o700
    for name in ("user_ca", "host_ca", "upstream_ca", "audit"):
        assert (state / name).stat().st_mode & 0o777 == 0o600 and (state / f"{name}.pub").is_file()
    assert process.returncode == 0 and b'"event":"shutdown"' in err
