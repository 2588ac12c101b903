"""Identity's settings: [[identity.issuers]], the OIDC providers whose tokens the bastion turns into certificates."""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import field_validator, model_validator

from bastion.config_types import Duration, Section

# Never: "none" (unsigned) and HS* (a shared secret; with a public key as the "secret" anyone can sign).
SAFE_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
RESERVED_USERNAMES = ("login", "token")  # the bastion's own SSH user names for issuance
_ISSUER_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class IssuerSettings(Section):
    name: str
    issuer: str
    client_id: str
    audience: str | None = None  # the `aud` a token must contain; default: client_id
    kind: Literal["human", "workload"] = "human"
    username_claim: str | None = None  # default: preferred_username (human), sub (workload)
    groups_claim: str = "groups"
    username_prefix: str = ""  # e.g. "ci-": keeps this issuer's names apart from every other issuer's
    algorithms: tuple[str, ...] = ("RS256", "ES256", "PS256", "EdDSA")
    scopes: tuple[str, ...] = ("openid", "profile", "email", "groups")  # asked for in interactive logins
    leeway: Duration = 30.0  # clock skew allowed on exp, nbf and iat

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _ISSUER_NAME.match(value):
            raise ValueError(f"expected a short name of lowercase letters, digits, '-', '_', got {value!r}")
        return value

    @field_validator("issuer")
    @classmethod
    def _issuer_url(cls, value: str) -> str:
        parts = urlsplit(value)
        loopback_http = parts.scheme == "http" and parts.hostname in _LOOPBACK
        if not (parts.scheme == "https" or loopback_http) or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"expected an https:// issuer URL (http only on loopback), got {value!r}")
        return value

    @field_validator("algorithms")
    @classmethod
    def _algorithms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for alg in value:
            if alg not in SAFE_ALGORITHMS:
                raise ValueError(f"algorithm {alg!r} is not accepted; expected some of {', '.join(SAFE_ALGORITHMS)}")
        if not value:
            raise ValueError("expected at least one algorithm")
        return value

    @field_validator("username_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if value and not re.fullmatch(r"[a-z_][a-z0-9_.-]{0,15}", value):
            raise ValueError(f"expected a prefix of lowercase letters, digits, '.', '-', '_', got {value!r}")
        return value

    @property
    def expected_audience(self) -> str:
        return self.audience or self.client_id

    @property
    def username_claim_name(self) -> str:
        return self.username_claim or ("preferred_username" if self.kind == "human" else "sub")


class IdentitySettings(Section):
    issuers: tuple[IssuerSettings, ...] = ()
    jwks_refetch_interval: Duration = 30.0  # an unknown key id re-fetches the JWKS at most this often

    @model_validator(mode="after")
    def _names_apart(self) -> IdentitySettings:
        names = [i.name for i in self.issuers]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"issuers: expected unique names; {name!r} is declared twice")
        unprefixed = [i.name for i in self.issuers if not i.username_prefix]
        if len(unprefixed) > 1:
            raise ValueError(
                f"issuers {unprefixed[0]!r} and {unprefixed[1]!r} both have no username_prefix, so their users' "
                'names could collide; give all issuers but one a distinct username_prefix such as "ci-"'
            )
        for a in self.issuers:
            for b in self.issuers:
                if a is not b and a.username_prefix and b.username_prefix.startswith(a.username_prefix):
                    raise ValueError(
                        f"issuers {a.name!r} and {b.name!r}: username_prefix {b.username_prefix!r} starts with "
                        f"{a.username_prefix!r}, so their users' names could collide"
                    )
        return self

    def issuer(self, name: str) -> IssuerSettings | None:
        return next((i for i in self.issuers if i.name == name), None)

    def default_human(self) -> IssuerSettings | None:
        return next((i for i in self.issuers if i.kind == "human"), None)

    def foreign_prefixes(self, issuer: IssuerSettings) -> tuple[str, ...]:
        """Other issuers' prefixes: a name from `issuer` may not start with one (no collisions)."""
        return tuple(i.username_prefix for i in self.issuers if i is not issuer and i.username_prefix)
