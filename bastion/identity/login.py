"""The client side of logging in: a token from the identity provider, exchanged at the bastion over
SSH for a certificate, then the files that make plain `ssh -J bastion mcp-host` work.

Files under the login home (default ~/.bastion, 0700; every file 0600):
  id_ed25519, id_ed25519.pub, id_ed25519-cert.pub   a fresh key per login, and its certificate
  known_hosts    `@cert-authority` for the bastion and the hosts behind it (the host CA it was given)
  ssh_config     Host blocks for the bastion and every host in its inventory (ProxyJump)
  login.json     what the next `bastion login`, `--status` and `ssh-config` start from
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

from bastion.config_types import HOST_NAME, LOGIN_NAME
from bastion.identity.certinfo import CertificateFormatError, parse_certificate

DEFAULT_HOME = Path("~/.bastion")
KEY_NAME = "id_ed25519"
INCLUDE_MARK = "# mcp-bastion: written by `bastion login`"


class LoginError(Exception):
    """A login that cannot go on; one line for the user."""


@dataclass
class IssuerInfo:
    name: str
    issuer: str
    client_id: str
    kind: str = "human"
    scopes: tuple[str, ...] = ("openid", "profile", "email", "groups")
    audience: str | None = None


@dataclass
class LoginState:
    """What one login established, saved as login.json."""

    bastion: str  # host:port
    alias: str  # the ssh config Host name of the bastion
    host_ca: str  # the host CA public key line the bastion's certificate must verify against
    issuer: IssuerInfo | None = None
    user: str = ""
    groups: list[str] = field(default_factory=list)
    serial: int = 0
    valid_before: float = 0.0
    hosts: list[dict[str, Any]] = field(default_factory=list)
    known_hosts: str = ""

    @classmethod
    def load(cls, home: Path) -> LoginState | None:
        path = home / "login.json"
        if not path.is_file():
            return None
        try:
            raw = json.loads(path.read_text())
            issuer = (
                IssuerInfo(**{**raw["issuer"], "scopes": tuple(raw["issuer"]["scopes"])}) if raw.get("issuer") else None
            )
            return cls(**{**raw, "issuer": issuer})
        except (ValueError, TypeError, KeyError) as exc:
            raise LoginError(f"{path}: unreadable login state ({exc}); remove it and log in again") from None

    def save(self, home: Path) -> None:
        _write_private(home / "login.json", json.dumps(asdict(self), indent=2).encode())


def split_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise LoginError(f"--bastion: expected HOST:PORT such as 127.0.0.1:2222, got {text!r}")
    return host.strip("[]"), int(port)


class _TokenClient(asyncssh.SSHClient):
    def __init__(self, token: str) -> None:
        self.token = token
        self.banners: list[str] = []
        self.asked = False

    def auth_banner_received(self, msg: str, lang: str) -> None:
        self.banners.append(msg.strip())

    def kbdint_auth_requested(self) -> str | None:
        if self.asked:
            return None  # one token, one try
        self.asked = True
        return ""

    def kbdint_challenge_received(self, name: str, instructions: str, lang: str, prompts: Any) -> list[str] | None:
        return [self.token] if len(prompts) == 1 else None


async def exchange(bastion: str, host_ca: str, token: str, public_key: str) -> dict[str, Any]:
    """Send the token and a public key to the bastion's `token` user; return its JSON answer."""
    host, port = split_address(bastion)
    known = asyncssh.import_known_hosts(f"@cert-authority * {host_ca}\n")
    client = _TokenClient(token)
    try:
        async with asyncssh.connect(
            host,
            port,
            username="token",
            known_hosts=known,
            client_factory=lambda: client,
            client_keys=None,
            agent_path=None,
            password=None,
            preferred_auth="keyboard-interactive",
            config=None,
            connect_timeout=15,
        ) as conn:
            result = await conn.run("certificate --json", input=public_key + "\n", check=False, timeout=30)
    except asyncssh.HostKeyNotVerifiable as exc:
        raise LoginError(
            f"the bastion at {bastion} did not prove itself with a host certificate from the given host CA ({exc}); "
            "refusing to send the token"
        ) from None
    except asyncssh.PermissionDenied:
        reason = client.banners[-1] if client.banners else "bastion: the token was refused"
        raise LoginError(reason.removeprefix("bastion: ")) from None
    except (OSError, asyncssh.Error, TimeoutError) as exc:
        raise LoginError(f"cannot reach the bastion at {bastion}: {str(exc) or type(exc).__name__}") from None
    if result.exit_status != 0:
        raise LoginError(str(result.stderr or "").strip().removeprefix("bastion: ") or "certificate refused")
    try:
        answer = json.loads(str(result.stdout))
    except ValueError:
        raise LoginError("the bastion's answer is not JSON; is this an mcp-bastion?") from None
    return dict(answer)


def new_key() -> asyncssh.SSHKey:
    """A fresh key for this login; written only with its certificate, so a failed login keeps the last one."""
    return asyncssh.generate_private_key("ssh-ed25519", comment="bastion login")


def check_answer(answer: dict[str, Any]) -> None:
    """The bastion's answer goes into ssh_config and known_hosts: only names, one trust line, one certificate."""
    try:
        names_ok = all(
            HOST_NAME.match(h["name"]) and all(LOGIN_NAME.match(x) for x in h["logins"]) for h in answer["hosts"]
        )
        user_ok = bool(LOGIN_NAME.match(answer["user"]))
        known = str(answer["known_hosts"])
        trust_ok = known.startswith("@cert-authority ") and "\n" not in known and "\r" not in known
        cert_ok = str(answer["certificate"]).startswith("ssh-") and "\n" not in str(answer["certificate"]).strip()
        int(answer["serial"]), float(answer["valid_before"]), [str(g) for g in answer["groups"]]
    except (KeyError, TypeError, ValueError):
        raise LoginError("the bastion's answer is incomplete; is this an mcp-bastion?") from None
    if not (names_ok and user_ok and trust_ok and cert_ok):
        raise LoginError("the bastion's answer holds names or lines that do not belong in an ssh config; refused")


def save_login(home: Path, state: LoginState, key: asyncssh.SSHKey, answer: dict[str, Any]) -> None:
    check_answer(answer)
    _write_private(home / KEY_NAME, key.export_private_key())
    _write_private(home / f"{KEY_NAME}.pub", key.export_public_key())
    _write_private(home / f"{KEY_NAME}-cert.pub", answer["certificate"].encode() + b"\n")
    state.user, state.groups = answer["user"], list(answer["groups"])
    state.serial, state.valid_before = int(answer["serial"]), float(answer["valid_before"])
    state.hosts, state.known_hosts = list(answer["hosts"]), str(answer["known_hosts"])
    write_ssh_files(home, state)
    state.save(home)


def write_ssh_files(home: Path, state: LoginState) -> None:
    _write_private(home / "known_hosts", (state.known_hosts + "\n").encode())
    _write_private(home / "ssh_config", render_ssh_config(home, state).encode())


def render_ssh_config(home: Path, state: LoginState) -> str:
    host, port = split_address(state.bastion)
    names = " ".join(h["name"] for h in state.hosts)
    key = home / KEY_NAME
    lines = [
        f"{INCLUDE_MARK}; `bastion ssh-config --write` rewrites it",
        f"Host {state.alias}",
        f"  HostName {host}",
        f"  Port {port}",
        f"  User {state.user}",
        f"Host {state.alias} {names}".rstrip(),
        f"  IdentityFile {key}",
        f"  CertificateFile {key}-cert.pub",
        "  IdentitiesOnly yes",
        f"  UserKnownHostsFile {home / 'known_hosts'}",
        "  StrictHostKeyChecking yes",
    ]
    if names:
        lines += [f"Host {names}", f"  ProxyJump {state.alias}"]
    return "\n".join(lines) + "\n"


def install_include(home: Path, ssh_dir: Path = Path("~/.ssh")) -> Path:
    """Put `Include HOME/ssh_config` at the top of ~/.ssh/config (once), so plain ssh finds the blocks."""
    config = ssh_dir.expanduser() / "config"
    config.parent.mkdir(mode=0o700, exist_ok=True)
    if config.is_symlink():  # a dotfile manager's link: edit the file it points to, keep the link
        config = config.resolve()
    line = f"Include {home / 'ssh_config'}"
    current = config.read_text() if config.exists() else ""
    if line not in current.splitlines():
        _write_private(config, f"{INCLUDE_MARK}\n{line}\n\n{current}".encode())
    return config


def status(home: Path, now: float | None = None) -> tuple[bool, str]:
    """(valid, one line): who is logged in, with which groups, and for how long."""
    now = time.time() if now is None else now
    state = LoginState.load(home)
    cert = home / f"{KEY_NAME}-cert.pub"
    if state is None or not cert.is_file():
        return False, "not logged in; run: bastion login"
    try:
        info = parse_certificate(asyncssh.import_certificate(cert.read_bytes()).public_data)
    except (asyncssh.KeyImportError, CertificateFormatError, ValueError) as exc:
        return False, f"{cert}: unreadable certificate ({exc}); run: bastion login"
    who = f"{state.user} (groups: {', '.join(state.groups) or 'none'}) at {state.bastion}"
    left = info.valid_before - now
    if left <= 0:
        return False, f"{who}: certificate expired {_duration(-left)} ago; log in again: bastion login"
    return True, f"{who}: certificate serial {info.serial} valid for {_duration(left)}"


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 60}h {minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m {int(seconds % 60):02d}s"


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def run_exchange(bastion: str, host_ca: str, token: str, public_key: str) -> dict[str, Any]:
    return asyncio.run(exchange(bastion, host_ca, token, public_key))
