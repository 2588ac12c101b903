"""Certificate authorities: files and modes, issuance, and the checks on presented certificates."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import asyncssh
import pytest

from bastion.identity.ca import Authorities, CertificateRejected
from bastion.identity.certinfo import USER, CertificateFormatError, is_certificate, parse_certificate


@pytest.fixture
def authorities(tmp_path: Path) -> Authorities:
    Authorities.init(tmp_path / "state")
    return Authorities(tmp_path / "state")


def test_init_creates_private_files_0600_in_a_0700_directory_and_is_idempotent(tmp_path: Path) -> None:
    state = tmp_path / "state"
    created = Authorities.init(state)
    assert created == ["user_ca", "host_ca", "upstream_ca", "audit", "host_key"]
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for name in created:
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600
        assert (state / f"{name}.pub").read_text().startswith("ssh-ed25519 ")
    before = (state / "user_ca").read_bytes()
    assert Authorities.init(state) == []
    assert (state / "user_ca").read_bytes() == before


def test_a_private_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    Authorities.init(tmp_path)
    (tmp_path / "user_ca").chmod(0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        Authorities(tmp_path)


def test_issued_user_certificate_fields(authorities: Authorities) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    now = time.time()
    issued = authorities.issue_user(key, "alice", 3600, now=now)
    info = parse_certificate(issued.certificate.public_data)
    assert info.cert_type == USER and info.principals == ("alice",)
    assert info.serial == issued.serial and info.key_id == f"user=alice serial={issued.serial}"
    assert info.valid_before == int(now + 3600) and info.valid_after <= now
    assert "permit-pty" in info.extensions and "permit-port-forwarding" in info.extensions
    assert "permit-agent-forwarding" not in info.extensions
    assert info.signature_key == authorities.user_ca.public_data
    authorities.check_user_certificate(info, "alice", now)


def _cert(ca: asyncssh.SSHKey, principals: list[str], after: int, before: int) -> bytes:
    key = asyncssh.generate_private_key("ssh-ed25519")
    return bytes(
        ca.generate_user_certificate(
            key, "k", serial=7, principals=principals, valid_after=after, valid_before=before
        ).public_data
    )


@pytest.mark.parametrize(
    ("principals", "after", "before", "user", "reason"),
    [
        ([], -60, 3600, "alice", "no principals"),
        (["alice"], -7200, -3600, "alice", "expired"),
        (["alice"], 3600, 7200, "alice", "not yet valid"),
        (["bob"], -60, 3600, "alice", "not valid for user 'alice'"),
    ],
)
def test_certificate_checks(
    authorities: Authorities, principals: list[str], after: int, before: int, user: str, reason: str
) -> None:
    now = int(time.time())
    info = parse_certificate(_cert(authorities.user_ca, principals, now + after, now + before))
    with pytest.raises(CertificateRejected, match=reason):
        authorities.check_user_certificate(info, user, now)


def test_foreign_ca_and_host_certificates_are_refused(authorities: Authorities) -> None:
    now = int(time.time())
    foreign = parse_certificate(_cert(asyncssh.generate_private_key("ssh-ed25519"), ["alice"], now - 60, now + 60))
    with pytest.raises(CertificateRejected, match="not signed by this bastion's user CA"):
        authorities.check_user_certificate(foreign, "alice", now)
    host = parse_certificate(authorities.host_certificate("mcp-host").public_data)
    assert host.principals == ("mcp-host",)
    with pytest.raises(CertificateRejected, match="not a user certificate"):
        authorities.check_user_certificate(host, "mcp-host", now)


def test_upstream_credential_is_short_lived_and_names_the_user(authorities: Authorities) -> None:
    _, cert = authorities.upstream_credential("mcp", "alice", "abc123", 60)
    info = parse_certificate(cert.public_data)
    assert info.principals == ("mcp",) and info.key_id == "bastion user=alice session=abc123"
    assert info.valid_before - time.time() <= 61
    assert info.signature_key == authorities.upstream_ca.public_data


def test_parser_handles_rsa_and_ecdsa_and_rejects_garbage(authorities: Authorities) -> None:
    for alg in ("ssh-rsa", "ecdsa-sha2-nistp256"):
        key = asyncssh.generate_private_key(alg)
        issued = authorities.issue_user(key, "carol", 60)
        assert parse_certificate(issued.certificate.public_data).serial == issued.serial
    plain = asyncssh.generate_private_key("ssh-ed25519").public_data
    assert not is_certificate(plain) and not is_certificate(b"\x00\x00")
    with pytest.raises(CertificateFormatError):
        parse_certificate(plain)
    truncated = authorities.issue_user(asyncssh.generate_private_key("ssh-ed25519"), "x", 60).certificate.public_data
    with pytest.raises(CertificateFormatError, match="truncated"):
        parse_certificate(truncated[:80])


def test_include_goes_on_top_once_and_through_a_symlinked_config(tmp_path: Path) -> None:
    from bastion.identity.login import install_include

    home, ssh_dir, dotfiles = tmp_path / ".bastion", tmp_path / ".ssh", tmp_path / "dotfiles"
    dotfiles.mkdir()
    (dotfiles / "ssh_config").write_text("Host old\n  User me\n")
    ssh_dir.mkdir()
    (ssh_dir / "config").symlink_to(dotfiles / "ssh_config")
    written = install_include(home, ssh_dir)
    install_include(home, ssh_dir)  # twice: one Include line
    assert (ssh_dir / "config").is_symlink() and written == (dotfiles / "ssh_config").resolve()
    text = (dotfiles / "ssh_config").read_text()
    assert text.count(f"Include {home / 'ssh_config'}") == 1 and text.endswith("Host old\n  User me\n")
    assert text.index("Include") < text.index("Host old")
