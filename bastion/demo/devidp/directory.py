"""Who the development IdP knows: its users and its OAuth clients, their defaults and their file format."""

from __future__ import annotations

import hmac
import json
import re
import secrets
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from authlib.oauth2.rfc6749 import ClientMixin, list_to_scope, scope_to_list
from authlib.oauth2.rfc8628 import DEVICE_CODE_GRANT_TYPE

AUTHORIZATION_CODE = "authorization_code"
CLIENT_CREDENTIALS = "client_credentials"
DEVICE_CODE = DEVICE_CODE_GRANT_TYPE
SCOPES = ("openid", "profile", "email", "groups")
PUBLIC_GRANTS = frozenset({AUTHORIZATION_CODE, DEVICE_CODE})
WORKLOAD_GRANTS = frozenset({CLIENT_CREDENTIALS})
SECRET_METHODS = ("client_secret_basic", "client_secret_post")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_GROUP = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}")
_LOOPBACK_HOSTS = ("127.0.0.1", "::1")
_GRANT_ALIASES = {"device_code": DEVICE_CODE}


class DevIdpError(ValueError):
    """Bad users, clients, options or requests for the development IdP; the message is for a person."""


@dataclass(frozen=True)
class User:
    """A person the development IdP vouches for, with no password: whoever picks the name is that user."""

    name: str
    groups: tuple[str, ...] = ()
    email: str = ""
    display_name: str = ""

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise DevIdpError(f"user {self.name!r}: expected a name such as 'alice' (letters, digits, . _ @ -)")
        for group in self.groups:
            if not _GROUP.fullmatch(group):
                raise DevIdpError(f"user {self.name}: group {group!r} is not a valid group name")

    def get_user_id(self) -> str:
        """authlib: the `sub` of the tokens issued for this user."""
        return self.name

    def claims(self) -> dict[str, Any]:
        """The identity claims of ID tokens for this user."""
        return {
            "sub": self.name,
            "preferred_username": self.name,
            "name": self.display_name or self.name.capitalize(),
            "email": self.email or f"{self.name}@example.com",
            "email_verified": True,
            "groups": list(self.groups),
        }


@dataclass(frozen=True)
class Client(ClientMixin):
    """An OAuth client: public (no secret; device flow, code + PKCE) or confidential (client credentials)."""

    client_id: str
    secret: str | None = None
    grant_types: frozenset[str] = PUBLIC_GRANTS
    scopes: tuple[str, ...] = SCOPES
    redirect_uris: tuple[str, ...] = ()
    loopback_redirects: bool = True
    groups: tuple[str, ...] = ()
    audience: str | None = None

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.client_id):
            raise DevIdpError(f"client {self.client_id!r}: expected an id such as 'ci-runner'")
        unknown = self.grant_types - PUBLIC_GRANTS - WORKLOAD_GRANTS
        if unknown:
            raise DevIdpError(f"client {self.client_id}: unsupported grant types {sorted(unknown)}")
        if CLIENT_CREDENTIALS in self.grant_types and not self.secret:
            raise DevIdpError(f"client {self.client_id}: client credentials need a secret")

    @property
    def is_public(self) -> bool:
        return not self.secret

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return self.redirect_uris[0] if len(self.redirect_uris) == 1 else None

    def get_allowed_scope(self, scope: str | None) -> str:
        if not scope:
            return ""
        return list_to_scope([s for s in scope_to_list(scope) if s in self.scopes])

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        if redirect_uri in self.redirect_uris:
            return True
        return self.loopback_redirects and is_loopback_redirect(redirect_uri)

    def check_client_secret(self, client_secret: str) -> bool:
        return bool(self.secret) and hmac.compare_digest(str(self.secret).encode(), client_secret.encode())

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "none" if self.is_public else method in SECRET_METHODS

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and AUTHORIZATION_CODE in self.grant_types

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types


def is_loopback_redirect(uri: str) -> bool:
    """RFC 8252 §7.3: http on a loopback IP literal, any port, no fragment."""
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError:
        return False
    return parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS and not parts.fragment


def default_users() -> list[User]:
    return [
        User("alice", ("dev", "approvers")),
        User("bob", ("dev",)),
        User("carol", ("ops",)),
    ]


def default_clients(
    public_id: str = "bastion",
    workload_id: str = "ci-runner",
    workload_secret: str | None = None,
    workload_groups: Iterable[str] = ("ci",),
) -> list[Client]:
    """The public client `bastion` (people) and the confidential `ci-runner` (workloads, client credentials)."""
    return [
        Client(public_id),
        Client(
            workload_id,
            secret=workload_secret or secrets.token_urlsafe(24),
            grant_types=WORKLOAD_GRANTS,
            groups=tuple(workload_groups),
        ),
    ]


def parse_user_spec(spec: str) -> User:
    """'alice:dev,ops' (or just 'alice') -> User('alice', ('dev', 'ops'))."""
    name, _, groups = spec.partition(":")
    try:
        return User(name.strip(), tuple(g.strip() for g in groups.split(",") if g.strip()))
    except DevIdpError as exc:
        raise DevIdpError(f"--user {spec!r}: expected NAME:GROUP,GROUP such as 'alice:dev,ops' ({exc})") from None


def read_secret_file(path: Path) -> str:
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise DevIdpError(f"{path}: cannot read the client secret: {exc.strerror}") from None
    if not secret:
        raise DevIdpError(f"{path}: the client secret file is empty")
    return secret


def load_directory(path: Path) -> tuple[list[User], list[Client] | None]:
    """Users (and optionally clients) from a TOML or JSON file; clients are None when the file has none.

    [users.alice]                       [clients.ci-runner]
    groups = ["dev", "approvers"]       secret_file = "ci-runner.secret"   # or secret = "..."
    email = "alice@example.com"         groups = ["ci"]
    name = "Alice Example"              audience = "bastion"
    """
    data = _read_document(path)
    _only_keys(path, "", data, {"users", "clients"})
    users = [_user(path, name, entry) for name, entry in _table(path, "users", data.get("users", {})).items()]
    if not users:
        raise DevIdpError(f"{path}: no users; add a [users.NAME] table with groups = [...]")
    if "clients" not in data:
        return users, None
    clients = [_client(path, cid, entry) for cid, entry in _table(path, "clients", data["clients"]).items()]
    return users, clients


def _read_document(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DevIdpError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise DevIdpError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'TOML'}: {exc}") from None
    if not isinstance(data, dict):
        raise DevIdpError(f"{path}: expected a table with 'users' (and optionally 'clients')")
    return data


def _table(path: Path, where: str, value: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise DevIdpError(f"{path}: {where}: expected tables such as [{where}.NAME]")
    return value


def _only_keys(path: Path, where: str, entry: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise DevIdpError(f"{path}: {where or 'top level'}: unknown key {unknown[0]!r}; expected {sorted(allowed)}")


def _strings(path: Path, where: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DevIdpError(f'{path}: {where}: expected a list of strings such as ["dev"]')
    return tuple(value)


def _user(path: Path, name: str, entry: dict[str, Any]) -> User:
    where = f"users.{name}"
    _only_keys(path, where, entry, {"groups", "email", "name"})
    try:
        return User(
            name,
            _strings(path, f"{where}.groups", entry.get("groups", [])),
            str(entry.get("email", "")),
            str(entry.get("name", "")),
        )
    except DevIdpError as exc:
        raise DevIdpError(f"{path}: {where}: {exc}") from None


def _client(path: Path, client_id: str, entry: dict[str, Any]) -> Client:
    where = f"clients.{client_id}"
    keys = {"secret", "secret_file", "grant_types", "scopes", "redirect_uris", "groups", "audience"}
    _only_keys(path, where, entry, keys)
    secret = entry.get("secret")
    if "secret_file" in entry:
        secret = read_secret_file(path.parent / str(entry["secret_file"]))
    default_grants = sorted(WORKLOAD_GRANTS if secret else PUBLIC_GRANTS)
    try:
        return Client(
            client_id,
            secret=str(secret) if secret else None,
            grant_types=frozenset(
                _GRANT_ALIASES.get(g, g)
                for g in _strings(path, f"{where}.grant_types", entry.get("grant_types", default_grants))
            ),
            scopes=_strings(path, f"{where}.scopes", entry.get("scopes", list(SCOPES))),
            redirect_uris=_strings(path, f"{where}.redirect_uris", entry.get("redirect_uris", [])),
            groups=_strings(path, f"{where}.groups", entry.get("groups", [])),
            audience=str(entry["audience"]) if "audience" in entry else None,
        )
    except DevIdpError as exc:
        raise DevIdpError(f"{path}: {where}: {exc}") from None
