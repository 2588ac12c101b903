"""Configuration: valid files load into frozen settings; every mistake is one line naming file and key."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from bastion import config
from bastion.control.exec_match import ExecPattern

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
GOOD = f"""
[server]
listen = "127.0.0.1:2222"
state_dir = "state"

[certificates]
user_ttl = "8h"

[[hosts]]
name = "mcp-host"
address = "10.0.0.5:22"
logins = ["mcp"]
host_key = "{KEY}"
labels = {{ env = "prod" }}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bastion.toml"
    path.write_text(text)
    return path


def error_for(tmp_path: Path, text: str) -> str:
    with pytest.raises(config.ConfigError) as excinfo:
        config.load(write(tmp_path, text))
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_good_file_loads_frozen_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    settings = config.load(write(tmp_path, GOOD))
    assert settings.server.listen == ("127.0.0.1", 2222)
    assert settings.server.state_dir == tmp_path / "state"
    assert settings.server.database == tmp_path / "state" / "bastion.db"
    host = settings.host("mcp-host")
    assert host is not None and host.address == ("10.0.0.5", 22) and host.port == 22 and host.credential == "ca"
    assert settings.certificates.user_ttl == 8 * 3600
    with pytest.raises(pydantic.ValidationError):
        host.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (('address = "10.0.0.5:22"', 'address = "10.0.0.5"'), 'hosts[0].address: expected "host:port"'),
        (
            ('address = "10.0.0.5:22"', 'address = "10.0.0.5:70000"'),
            "hosts[0].address: expected a port from 1 to 65535",
        ),
        (('listen = "127.0.0.1:2222"', "listen = 2222"), 'server.listen: expected "host:port"'),
        (('user_ttl = "8h"', 'user_ttl = "8 hours"'), "certificates.user_ttl: expected a duration"),
        (('user_ttl = "8h"', "user_ttl = 8"), "certificates.user_ttl: expected a duration as a string"),
        (('user_ttl = "8h"', 'user_ttl = "48h"'), "user_ttl is longer than max_ttl"),
        (('logins = ["mcp"]', 'logins = "mcp"'), "hosts[0].logins: expected a list"),
        (('logins = ["mcp"]', "logins = []"), "hosts[0].logins: expected at least one login"),
        (('logins = ["mcp"]', 'login = ["mcp"]'), "hosts[0].login: unknown key; expected one of:"),
        (("[certificates]", '[certificates]\nuser_tll = "1h"'), "certificates.user_tll: unknown key"),
        (
            (f'host_key = "{KEY}"', 'host_key = "ssh-ed25519 nonsense"'),
            "hosts[0].host_key: expected an OpenSSH public key",
        ),
        ((f'host_key = "{KEY}"', ""), "expected exactly one of host_key or known_hosts"),
        ((f'host_key = "{KEY}"', f'host_key = "{KEY}"\ncredential = "password"'), 'hosts[0].credential: expected "ca"'),
        (
            (f'host_key = "{KEY}"', 'known_hosts = "missing_known_hosts"'),
            "hosts[0].known_hosts: expected an existing file",
        ),
        (
            (f'host_key = "{KEY}"', f'host_key = "{KEY}"\ncredential = "key:nokey"'),
            "credential: expected an existing private key",
        ),
        (('name = "mcp-host"', 'name = "bad host!"'), "hosts[0].name: expected a host name"),
        (('state_dir = "state"', "state_dir = 5"), "server.state_dir: expected a path"),
        (("[server]", "[serve]"), "serve: unknown key"),
    ],
)
def test_errors_name_file_key_and_expectation(tmp_path: Path, change: tuple[str, str], expected: str) -> None:
    assert change[0] in GOOD
    message = error_for(tmp_path, GOOD.replace(*change, 1))
    assert message.startswith(str(tmp_path / "bastion.toml") + ": ")
    assert expected in message


def test_duplicate_host_names(tmp_path: Path) -> None:
    host = GOOD[GOOD.index("[[hosts]]") :]
    assert "declared twice" in error_for(tmp_path, GOOD + host)


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="no such configuration file"):
        config.load(tmp_path / "nope.toml")
    assert "not valid TOML" in error_for(tmp_path, "[server\nlisten=")


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("15m", 900), ("1h30m", 5400), ("100ms", 0.1), ("2d", 172800)]
)
def test_durations(text: str, seconds: float) -> None:
    assert config.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "m", "1x", "-5s", "0s", "1h 2"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        config.parse_duration(text)


def test_addresses() -> None:
    assert config.parse_address("[::1]:22") == ("::1", 22)
    assert config.parse_address("host.example:2222") == ("host.example", 2222)
    for bad in ["host", ":22", "host:", "[::1]", "a b:22", "host:0"]:
        with pytest.raises(ValueError):
            config.parse_address(bad)


def test_env_allow_list(tmp_path: Path) -> None:
    settings = config.load(write(tmp_path, GOOD))
    assert settings.server.env_accepted("LANG") and settings.server.env_accepted("LC_ALL")
    assert not settings.server.env_accepted("LD_PRELOAD") and not settings.server.env_accepted("SECRET")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            '[[identity.issuers]]\nname = "corp"\nissuer = "https://idp.example"\n',
            "identity.issuers[0].client_id: missing",
        ),
        (
            '[[identity.issuers]]\nname = "corp"\nissuer = "https://idp.example"\nclient_id = "b"\n'
            'algorithms = ["HS256"]\n',
            "identity.issuers[0].algorithms: algorithm 'HS256' is not accepted",
        ),
        (
            '[[identity.issuers]]\nname = "corp"\nissuer = "https://idp.example"\nclient_id = "b"\nclaim = "x"\n',
            "identity.issuers[0].claim: unknown key; expected one of",
        ),
        ('[[rules]]\nname = "r"\neffect = "maybe"\n', "rules[0].effect:"),
        (
            '[[rules]]\nname = "r"\neffect = "approve"\nexec = ["sudo *"]\n',
            "rules[0] (r): an approve rule needs approvers",
        ),
        ('[[rules]]\nname = "r"\neffect = "deny"\nexec = ["re:(unclosed"]\n', "rules[0].exec"),
        (
            '[[rules]]\nname = "r"\neffect = "deny"\nexec = [{ program = "rm", options = ["r"] }]\n',
            "rules[0].exec[0].options: expected options such as '-r' or '-r|--recursive', got 'r'",
        ),
        (
            '[[rules]]\nname = "r"\neffect = "deny"\nexec = [{ prog = "rm" }]\n',
            "rules[0].exec[0].prog: unknown key; expected one of: args, options, program",
        ),
        ('[[rules]]\nname = "r"\neffect = "deny"\nexec = [3]\n', "rules[0].exec[0]: expected a string, got 3"),
        ('[policy]\nopaque = "maybe"\n', "policy.opaque:"),
        ("[approvals]\ntimeout = 600\n", 'approvals.timeout: expected a duration as a string such as "600s"'),
        ('[masking]\npacks = ["secrets", "passwords"]\n', "masking.packs"),
        ('[masking]\npatterns = [{ name = "t", regex = "(" }]\n', "masking.patterns[0].regex"),
    ],
)
def test_errors_in_identity_rules_approvals_and_masking(tmp_path: Path, extra: str, expected: str) -> None:
    message = error_for(tmp_path, GOOD + "\n" + extra)
    assert expected in message, message


def test_rules_identity_and_masking_load(tmp_path: Path) -> None:
    settings = config.load(
        write(
            tmp_path,
            GOOD
            + """
[approvals]
approver_groups = ["ops"]

[[rules]]
name = "dev"
effect = "allow"
groups = ["dev"]

[[rules]]
name = "sudo"
effect = "approve"
exec = ["sudo *", { program = "rm", options = ["-r|--recursive", "-f"], args = ["/*"] }]
grant = "15m"

[policy]
opaque = "deny"

[masking]
packs = ["secrets"]
patterns = [{ name = "ticket", regex = "TCK-[0-9]{6}" }]

[[identity.issuers]]
name = "corp"
issuer = "https://idp.example"
client_id = "bastion"
""",
        )
    )
    assert [r.name for r in settings.rules] == ["dev", "sudo"] and settings.rules[1].grant == 900.0
    table = settings.rules[1].exec[1]
    assert isinstance(table, ExecPattern) and table.describe() == "rm -r|--recursive -f /*"
    assert settings.policy.opaque == "deny"
    assert settings.masking.packs == ("secrets",) and settings.identity.issuers[0].expected_audience == "bastion"
