"""bastion.toml -> validated, frozen settings.

Every error is one line that names the file, the key and what is expected, so an operator can
fix it without reading code. Relative paths are relative to the configuration file.
"""

from __future__ import annotations

import fnmatch
import os
import tomllib
from pathlib import Path
from typing import Any

import asyncssh
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bastion.config_types import (
    HOST_NAME,
    LOGIN_NAME,
    Address,
    Duration,
    Section,
    parse_address,
    parse_duration,
    resolve_path,
)
from bastion.control.config import ApprovalSettings, PolicySettings, Rule, check_rules
from bastion.control.exec_match import ExecPattern
from bastion.identity.config import IdentitySettings
from bastion.masking.config import MaskingSettings
from bastion.mcp.config import McpServer, McpSettings

__all__ = ["LOGIN_NAME", "ConfigError", "Settings", "load", "parse_address", "parse_duration"]

DEFAULT_PATH = "bastion.toml"
ENV_VAR = "BASTION_CONFIG"


class ConfigError(Exception):
    """A configuration that cannot be used; the message is one line for the operator."""


class ServerSettings(Section):
    listen: Address = ("127.0.0.1", 2222)
    state_dir: Path = Path("state")
    database: Path | None = None  # default: <state_dir>/bastion.db
    names: tuple[str, ...] = ("bastion", "localhost", "127.0.0.1")
    accept_env: tuple[str, ...] = ("LANG", "LC_*", "TERM", "COLORTERM", "TZ")
    login_grace: Duration = 30.0
    max_channels_per_connection: int = Field(default=32, ge=1, le=10_000)  # sessions, forwards, hops
    max_sessions_per_user: int = Field(default=32, ge=1, le=100_000)  # live recorded sessions, all connections

    @field_validator("state_dir", "database", mode="before")
    @classmethod
    def _relative_to_file(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise ValueError(f"expected a path as a string, got {value!r}")
        return resolve_path(value, info)

    @model_validator(mode="after")
    def _default_database(self, info: ValidationInfo) -> ServerSettings:
        if not self.state_dir.is_absolute():
            object.__setattr__(self, "state_dir", resolve_path(str(self.state_dir), info))
        if self.database is None:
            object.__setattr__(self, "database", self.state_dir / "bastion.db")
        return self

    def env_accepted(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.accept_env)

    @property
    def database_path(self) -> Path:
        assert self.database is not None
        return self.database


class CertificateSettings(Section):
    user_ttl: Duration = 8 * 3600.0
    workload_ttl: Duration = 15 * 60.0
    max_ttl: Duration = 24 * 3600.0
    upstream_ttl: Duration = 60.0

    @model_validator(mode="after")
    def _within_max(self) -> CertificateSettings:
        for key in ("user_ttl", "workload_ttl"):
            if getattr(self, key) > self.max_ttl:
                raise ValueError(f"{key} is longer than max_ttl; expected at most max_ttl")
        return self


class RecordingSettings(Section):
    flush_interval: Duration = 0.05
    checkpoint_interval: Duration = 60.0  # a signed checkpoint at least this often while there is activity
    retention: Duration | None = None  # prune session events older than this (None: keep forever)
    log_origin: str = "mcp-bastion/audit"  # the checkpoints' origin line and signing key name

    @field_validator("log_origin")
    @classmethod
    def _origin(cls, value: str) -> str:
        if not value or any(c.isspace() or c == "+" for c in value):
            raise ValueError(f"expected a name without spaces or '+', such as 'bastion.example/audit', got {value!r}")
        return value


class HostSettings(Section):
    name: str
    address: Address
    logins: tuple[str, ...]
    host_key: str | None = None
    known_hosts: Path | None = None
    credential: str = "ca"
    port: int = Field(default=22, ge=1, le=65535)  # the port users name: ssh -J bastion host
    labels: dict[str, str] = Field(default_factory=dict)
    mcp: tuple[McpServer, ...] = ()  # the MCP servers this host runs ([[hosts.mcp]])

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not HOST_NAME.match(value):
            raise ValueError(f"expected a host name of letters, digits, '.', '-', '_', got {value!r}")
        return value

    @field_validator("logins")
    @classmethod
    def _logins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError('expected at least one login, such as ["mcp"]')
        for login in value:
            if not LOGIN_NAME.match(login):
                raise ValueError(f"expected login names like 'mcp', got {login!r}")
        return value

    @field_validator("host_key")
    @classmethod
    def _host_key(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                asyncssh.import_public_key(value)
            except (asyncssh.KeyImportError, ValueError) as exc:
                raise ValueError(f'expected an OpenSSH public key "ssh-ed25519 AAAA...": {exc}') from None
        return value

    @field_validator("known_hosts", mode="before")
    @classmethod
    def _known_hosts(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise ValueError(f"expected a path as a string, got {value!r}")
        return resolve_path(value, info)

    @field_validator("credential", mode="before")
    @classmethod
    def _credential(cls, value: Any, info: ValidationInfo) -> Any:
        if value == "ca":
            return value
        if isinstance(value, str) and value.startswith("key:") and len(value) > 4:
            return "key:" + str(resolve_path(value[4:], info))
        raise ValueError(f'expected "ca" or "key:path/to/private_key", got {value!r}')

    @model_validator(mode="after")
    def _one_key_source(self) -> HostSettings:
        if (self.host_key is None) == (self.known_hosts is None):
            raise ValueError("expected exactly one of host_key or known_hosts: the target's key is always verified")
        names = [server.name for server in self.mcp]
        for server in self.mcp:
            if names.count(server.name) > 1:
                raise ValueError(f"mcp: expected unique server names; {server.name!r} is declared twice")
            if server.login is not None and server.login not in self.logins:
                raise ValueError(f"mcp: server {server.name!r} has login {server.login!r}, not one of {self.logins}")
        return self

    def mcp_stdio(self, command: str) -> McpServer | None:
        """The declared stdio MCP server this exec command runs, if any."""
        return next((server for server in self.mcp if server.runs(command)), None)

    @property
    def key_path(self) -> Path | None:
        return Path(self.credential[4:]) if self.credential.startswith("key:") else None


class Settings(Section):
    """The whole configuration, frozen."""

    path: Path = Path(DEFAULT_PATH)
    server: ServerSettings = Field(default_factory=ServerSettings)
    certificates: CertificateSettings = Field(default_factory=CertificateSettings)
    recording: RecordingSettings = Field(default_factory=RecordingSettings)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    approvals: ApprovalSettings = Field(default_factory=ApprovalSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    rules: tuple[Rule, ...] = ()
    masking: MaskingSettings = Field(default_factory=MaskingSettings)
    mcp: McpSettings = Field(default_factory=McpSettings)
    hosts: tuple[HostSettings, ...] = ()

    @field_validator("hosts")
    @classmethod
    def _unique_names(cls, hosts: tuple[HostSettings, ...]) -> tuple[HostSettings, ...]:
        seen: set[str] = set()
        for host in hosts:
            if host.name in seen:
                raise ValueError(f"expected unique host names; {host.name!r} is declared twice")
            seen.add(host.name)
        return hosts

    @model_validator(mode="after")
    def _rules_consistent(self) -> Settings:
        check_rules(self.rules, self.approvals.approver_groups)
        return self

    def host(self, name: str) -> HostSettings | None:
        return next((h for h in self.hosts if h.name == name), None)


def default_path() -> Path:
    return Path(os.environ.get(ENV_VAR) or DEFAULT_PATH)


def load(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read and validate a configuration file; raise ConfigError with one line on any problem."""
    file = Path(path) if path is not None else default_path()
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{file}: no such configuration file; pass -c FILE or set ${ENV_VAR}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    if "path" in raw:
        raise ConfigError(f"{file}: path: unknown key")
    raw["path"] = str(file)
    raw.setdefault("server", {})  # so that defaults are resolved against the file's folder
    try:
        settings = Settings.model_validate(raw, context={"base_dir": str(file.parent.resolve())})
    except ValidationError as exc:
        raise ConfigError(f"{file}: {_describe(exc)}") from None
    for host in settings.hosts:
        _check_files(file, settings, host)
    return settings


def _check_files(file: Path, settings: Settings, host: HostSettings) -> None:
    index = settings.hosts.index(host)
    if host.known_hosts is not None and not host.known_hosts.is_file():
        raise ConfigError(f"{file}: hosts[{index}].known_hosts: expected an existing file, got {host.known_hosts}")
    key_path = host.key_path
    if key_path is not None and not key_path.is_file():
        raise ConfigError(f"{file}: hosts[{index}].credential: expected an existing private key file, got {key_path}")


_TYPE_WORDS = {
    "string_type": "expected a string",
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "dict_type": "expected a table",
    "model_type": "expected a table",
    "missing": "missing required key",
}


def _describe(exc: ValidationError) -> str:
    """The first validation error as 'key.path: what is expected'."""
    errors = exc.errors()
    # A misspelt key also shows up as a missing one; name the misspelling, it is the cause.
    error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = _format_loc(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{loc}: unknown key; expected one of: {', '.join(_allowed_keys(error['loc']))}"
    message = _TYPE_WORDS.get(kind)
    if message is None:
        message = str(error["msg"]).removeprefix("Value error, ")
    elif kind != "missing":
        message = f"{message}, got {error.get('input')!r}"
    return f"{loc}: {message}" if loc else message


_UNION_TAGS = frozenset({"text", "table"})  # the kinds of an `exec` entry, not keys a person wrote


def _format_loc(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part.startswith("function-") or part.startswith("tagged-union") or part in _UNION_TAGS:
            continue
        else:
            text += f".{part}" if text else part
    return text


def _allowed_keys(loc: tuple[int | str, ...]) -> list[str]:
    if "table" in loc:  # inside a structured `exec` entry
        return sorted(ExecPattern.model_fields)
    model: type[BaseModel] = Settings
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[str(part)].annotation
        inner = getattr(annotation, "__args__", (annotation,))
        candidates = [t for t in inner if isinstance(t, type) and issubclass(t, BaseModel)]
        if not candidates:
            break
        model = candidates[0]
    return sorted(k for k in model.model_fields if k != "path")
