"""OIDC token verification: a signed token from a configured issuer -> a username and groups.

Checks, each with a one-line reason on failure: compact JWS form; algorithm on the issuer's
allow-list (never `none`, never HS*); `iss` exact; a signing key from the issuer's JWKS (found
through discovery, cached, re-fetched once on an unknown key id at most every
`jwks_refetch_interval`); the signature; `aud` contains the issuer's audience; `azp`, when
present, is the client id; `exp`, `nbf`, `iat` within `leeway`; `nonce` when the caller ran an
interactive flow; for access tokens (RFC 9068, `typ: at+jwt`) that the issuer is a workload issuer.
Claims map to a login-safe username (with the issuer's prefix) and groups.

I/O is one injected function `fetch_json(url) -> dict`, so this module is tested without a network.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from bastion.config_types import LOGIN_NAME
from bastion.identity.config import RESERVED_USERNAMES, IdentitySettings, IssuerSettings

FetchJson = Callable[[str], dict[str, Any]]
ACCESS_TOKEN_TYPES = ("at+jwt", "application/at+jwt")
MAX_TOKEN_BYTES = 16 * 1024


class TokenRejected(Exception):
    """A token that does not prove an identity; the message is one line for the user."""


@dataclass(frozen=True)
class VerifiedToken:
    issuer: IssuerSettings
    username: str
    groups: tuple[str, ...]
    subject: str
    token_type: str  # "id_token" or "access_token"
    expires_at: float
    claims: dict[str, Any] = field(repr=False, compare=False)


def http_get_json(url: str, timeout: float = 5.0) -> dict[str, Any]:
    """GET a JSON document; any failure is one line."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            document = json.loads(response.read(1024 * 1024))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise TokenRejected(f"cannot fetch {url}: {getattr(exc, 'reason', exc)}") from None
    if not isinstance(document, dict):
        raise TokenRejected(f"{url} did not return a JSON object")
    return document


class IssuerKeys:
    """One issuer's discovery document and JWKS, cached; an unknown kid re-fetches, rate-limited."""

    def __init__(self, issuer: IssuerSettings, fetch: FetchJson, refetch_interval: float, clock: Callable[[], float]):
        self.issuer = issuer
        self._fetch = fetch
        self._refetch_interval = refetch_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._discovery: dict[str, Any] | None = None
        self._keys: KeySet | None = None
        self._fetched_at = float("-inf")

    def discovery(self) -> dict[str, Any]:
        with self._lock:
            if self._discovery is None:
                url = self.issuer.issuer.rstrip("/") + "/.well-known/openid-configuration"
                document = self._fetch(url)
                if document.get("issuer") != self.issuer.issuer:
                    raise TokenRejected(
                        f"issuer {self.issuer.name}: discovery names issuer {document.get('issuer')!r}, "
                        f"expected {self.issuer.issuer!r}"
                    )
                jwks_uri = document.get("jwks_uri")
                if not isinstance(jwks_uri, str) or not _safe_url(jwks_uri):
                    raise TokenRejected(f"issuer {self.issuer.name}: discovery has no https jwks_uri")
                self._discovery = document
            return self._discovery

    def key_for(self, kid: str | None) -> Any:
        """The signing key with this kid (or the only key, when the token names none)."""
        with self._lock:
            keys = self._keys
        if keys is None:
            if self._clock() - self._fetched_at < self._refetch_interval:
                raise TokenRejected(
                    f"issuer {self.issuer.name}: its signing keys could not be fetched; try again shortly"
                )
            keys = self._refresh(force=True)
        key = _find_key(keys, kid)
        if key is None and self._clock() - self._fetched_at >= self._refetch_interval:
            key = _find_key(self._refresh(force=False), kid)  # rotation: fetch once more
        if key is None:
            raise TokenRejected(f"token signed with unknown key id {kid!r} (issuer {self.issuer.name})")
        return key

    def _refresh(self, force: bool) -> KeySet:
        jwks_uri = self.discovery()["jwks_uri"]
        with self._lock:
            self._fetched_at = self._clock()  # failures count too: an unreachable JWKS is not hammered
        document = self._fetch(jwks_uri)
        try:
            keys = KeySet.import_key_set(document)  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise TokenRejected(f"issuer {self.issuer.name}: unusable JWKS at {jwks_uri}: {exc}") from None
        with self._lock:
            self._keys = keys
            self._fetched_at = self._clock()
        return keys


def _safe_url(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1"))


def _find_key(keys: KeySet, kid: str | None) -> Any:
    if kid is None:
        return keys.keys[0] if len(keys.keys) == 1 else None
    return next((k for k in keys.keys if k.kid == kid), None)


class TokenVerifier:
    def __init__(
        self,
        identity: IdentitySettings,
        fetch: FetchJson = http_get_json,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.identity = identity
        self._clock = clock
        self._keys = {i.name: IssuerKeys(i, fetch, identity.jwks_refetch_interval, clock) for i in identity.issuers}

    def keys(self, issuer: IssuerSettings) -> IssuerKeys:
        return self._keys[issuer.name]

    def verify(self, token: str, nonce: str | None = None, issuer_name: str | None = None) -> VerifiedToken:
        token = token.strip()
        header, unverified = _peek(token)
        issuer = self._issuer(unverified, _is_access_token(header), issuer_name)
        alg = header.get("alg")
        if alg == "none" or not isinstance(alg, str) or alg not in issuer.algorithms:
            raise TokenRejected(f"algorithm {alg!r} is not accepted (issuer {issuer.name} allows {issuer.algorithms})")
        token_type = _token_type(header, issuer)
        key = self._keys[issuer.name].key_for(header.get("kid"))
        try:
            claims = jwt.decode(token, key, algorithms=[alg]).claims
        except JoseError as exc:
            raise TokenRejected(f"bad token signature ({exc.error})") from None
        except (ValueError, TypeError) as exc:
            raise TokenRejected(f"malformed token: {exc}") from None
        self._check_claims(claims, issuer, token_type, nonce)
        return VerifiedToken(
            issuer=issuer,
            username=self._username(claims, issuer),
            groups=_groups(claims.get(issuer.groups_claim)),
            subject=str(claims["sub"]),
            token_type=token_type,
            expires_at=float(claims["exp"]),
            claims=claims,
        )

    def _issuer(self, unverified: dict[str, Any], access_token: bool, issuer_name: str | None) -> IssuerSettings:
        """The configured issuer for this token: `iss` exact; where one provider is configured twice (people
        and workloads), the entry whose kind fits the token type and whose audience the token names."""
        iss = unverified.get("iss")
        if not isinstance(iss, str):
            raise TokenRejected("token has no iss claim")
        candidates = [i for i in self.identity.issuers if i.issuer == iss]
        if not candidates:
            raise TokenRejected(f"issuer {iss!r} is not trusted by this bastion")
        if issuer_name is not None:
            candidates = [i for i in candidates if i.name == issuer_name]
            if not candidates:
                raise TokenRejected(f"token is not from issuer {issuer_name!r}")
        if access_token:
            candidates = [i for i in candidates if i.kind == "workload"] or candidates
        aud = unverified.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        return next((i for i in candidates if i.expected_audience in audiences), candidates[0])

    def _check_claims(self, claims: dict[str, Any], issuer: IssuerSettings, token_type: str, nonce: str | None) -> None:
        required = ("iss", "sub", "aud", "exp", "iat") + (("client_id", "jti") if token_type == "access_token" else ())
        for name in required:
            if claims.get(name) in (None, ""):
                raise TokenRejected(f"token has no {name} claim")
        if claims["iss"] != issuer.issuer:
            raise TokenRejected(f"token issuer {claims['iss']!r} is not {issuer.issuer!r}")
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if issuer.expected_audience not in audiences:
            raise TokenRejected(f"token audience {claims['aud']!r} does not include {issuer.expected_audience!r}")
        azp = claims.get("azp")
        if azp is not None and azp != issuer.client_id:
            raise TokenRejected(f"token authorized party {azp!r} is not {issuer.client_id!r}")
        now, leeway = self._clock(), issuer.leeway
        for name in ("exp", "iat") + (("nbf",) if "nbf" in claims else ()):
            if not isinstance(claims[name], (int, float)) or isinstance(claims[name], bool):
                raise TokenRejected(f"token claim {name} is not a number")
        if claims["exp"] + leeway <= now:
            raise TokenRejected(f"token expired {int(now - claims['exp'])} s ago; log in again")
        if claims.get("nbf", 0) - leeway > now:
            raise TokenRejected(f"token is not valid for another {int(claims['nbf'] - now)} s")
        if claims["iat"] - leeway > now:
            raise TokenRejected("token was issued in the future; check the clocks")
        if nonce is not None and claims.get("nonce") != nonce:
            raise TokenRejected("token nonce does not match this login")

    def _username(self, claims: dict[str, Any], issuer: IssuerSettings) -> str:
        claim = issuer.username_claim_name
        value = claims.get(claim)
        if not isinstance(value, str) or not value:
            raise TokenRejected(f"token has no {claim} claim to name the user")
        name = issuer.username_prefix + value.strip().lower()
        if not LOGIN_NAME.match(name):
            raise TokenRejected(f"{claim} {_printable(value)!r} is not a valid login name (letters, digits, . - _)")
        if name in RESERVED_USERNAMES or name.startswith("login+"):
            raise TokenRejected(f"{claim} {value!r} is a name reserved by the bastion")
        if not issuer.username_prefix and any(name.startswith(p) for p in self.identity.foreign_prefixes(issuer)):
            raise TokenRejected(f"{claim} {value!r} starts with another issuer's username prefix")
        return name


def _peek(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and payload of a compact JWS, before any check (only to choose issuer and key)."""
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenRejected(f"token is longer than {MAX_TOKEN_BYTES} bytes")
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenRejected("not a signed JWT (expected header.payload.signature)")
    try:
        header, payload = (json.loads(_b64decode(p)) for p in parts[:2])
    except ValueError:
        raise TokenRejected("not a signed JWT (header or payload is not base64url JSON)") from None
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise TokenRejected("not a signed JWT (header or payload is not a JSON object)")
    return header, payload


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _is_access_token(header: dict[str, Any]) -> bool:
    return str(header.get("typ", "JWT")).lower() in ACCESS_TOKEN_TYPES


def _token_type(header: dict[str, Any], issuer: IssuerSettings) -> str:
    typ = str(header.get("typ", "JWT")).lower()
    if typ in ACCESS_TOKEN_TYPES:
        if issuer.kind != "workload":
            raise TokenRejected(f"access tokens are accepted only from workload issuers; {issuer.name} is human")
        return "access_token"
    if typ not in ("jwt", "application/jwt"):
        raise TokenRejected(f"token type {header.get('typ')!r} is not an ID token or a JWT access token")
    return "id_token"


def _groups(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value.replace(",", " ").split() if isinstance(value, str) else value
    if not isinstance(items, list):
        raise TokenRejected("groups claim is neither a list nor a string")
    groups = []
    for item in items:
        if isinstance(item, str) and item.strip() and _printable(item) == item and len(item) <= 128:
            groups.append(item.strip())
    return tuple(dict.fromkeys(groups))


def _printable(text: str) -> str:
    return "".join(c for c in text if c.isprintable())[:80]
