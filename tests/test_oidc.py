"""Token verification with locally generated keys: one test per way a token must be refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from bastion.identity.config import IdentitySettings, IssuerSettings
from bastion.identity.oidc import TokenRejected, TokenVerifier

ISSUER = "https://idp.example"
NOW = 1_800_000_000.0


class FakeIdp:
    """Discovery and JWKS documents served from memory, counting fetches (no network in unit tests)."""

    def __init__(self) -> None:
        self.keys = [RSAKey.generate_key(2048, parameters={"kid": "k1"}, private=True)]
        self.fetches: list[str] = []

    def fetch(self, url: str) -> dict[str, Any]:
        self.fetches.append(url)
        if url == f"{ISSUER}/.well-known/openid-configuration":
            return {"issuer": ISSUER, "jwks_uri": f"{ISSUER}/jwks"}
        assert url == f"{ISSUER}/jwks"
        return {"keys": [k.as_dict(private=False) for k in self.keys]}

    def sign(self, claims: dict[str, Any], key: RSAKey | None = None, **header: Any) -> str:
        key = key or self.keys[0]
        return jwt.encode({"alg": "RS256", "kid": key.kid, **header}, claims, key)


def claims(**overrides: Any) -> dict[str, Any]:
    base = {
        "iss": ISSUER,
        "sub": "user-123",
        "aud": "bastion",
        "azp": "bastion",
        "exp": NOW + 600,
        "iat": NOW - 10,
        "preferred_username": "Alice",
        "groups": ["dev", "approvers"],
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def identity(**overrides: Any) -> IdentitySettings:
    human = {"name": "corp", "issuer": ISSUER, "client_id": "bastion", **overrides}
    return IdentitySettings(issuers=(IssuerSettings(**human),))


@pytest.fixture
def idp() -> FakeIdp:
    return FakeIdp()


@pytest.fixture
def verifier(idp: FakeIdp) -> TokenVerifier:
    return TokenVerifier(identity(), fetch=idp.fetch, clock=lambda: NOW)


def rejected(verifier: TokenVerifier, token: str, **kwargs: Any) -> str:
    with pytest.raises(TokenRejected) as info:
        verifier.verify(token, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_valid_id_token_maps_to_a_lowercase_username_and_groups(idp: FakeIdp, verifier: TokenVerifier) -> None:
    verified = verifier.verify(idp.sign(claims()))
    assert (verified.username, verified.groups, verified.subject) == ("alice", ("dev", "approvers"), "user-123")
    assert verified.token_type == "id_token" and verified.issuer.name == "corp"


def test_wrong_issuer(idp: FakeIdp, verifier: TokenVerifier) -> None:
    assert "not trusted" in rejected(verifier, idp.sign(claims(iss="https://evil.example")))


def test_wrong_audience(idp: FakeIdp, verifier: TokenVerifier) -> None:
    assert "audience" in rejected(verifier, idp.sign(claims(aud=["other-app"], azp=None)))


def test_audience_list_containing_the_client_is_accepted(idp: FakeIdp, verifier: TokenVerifier) -> None:
    assert verifier.verify(idp.sign(claims(aud=["other-app", "bastion"]))).username == "alice"


def test_authorized_party_must_be_the_client(idp: FakeIdp, verifier: TokenVerifier) -> None:
    assert "authorized party" in rejected(verifier, idp.sign(claims(azp="other-app")))


def test_expired(idp: FakeIdp, verifier: TokenVerifier) -> None:
    assert "expired" in rejected(verifier, idp.sign(claims(exp=NOW - 31)))


def test_expiry_within_the_leeway_is_accepted(idp: FakeIdp, verifier: TokenVerifier) -> None:
    assert verifier.verify(idp.sign(claims(exp=NOW - 5))).username == "alice"


def test_not_yet_valid(idp: FakeIdp, verifier: TokenVerifier) -> None:
    assert "not valid for another" in rejected(verifier, idp.sign(claims(nbf=NOW + 120)))


def test_issued_in_the_future(idp: FakeIdp, verifier: TokenVerifier) -> None:
    assert "future" in rejected(verifier, idp.sign(claims(iat=NOW + 300)))


def test_bad_signature(idp: FakeIdp, verifier: TokenVerifier) -> None:
    token = idp.sign(claims())
    header, payload, signature = token.split(".")
    forged = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged["preferred_username"] = "root"
    payload = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    assert "signature" in rejected(verifier, f"{header}.{payload}.{signature}")


def test_signed_by_a_key_with_the_right_kid_but_not_the_issuers(idp: FakeIdp, verifier: TokenVerifier) -> None:
    impostor = RSAKey.generate_key(2048, parameters={"kid": "k1"}, private=True)
    assert "signature" in rejected(verifier, idp.sign(claims(), key=impostor))


def _unsigned(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> tuple[str, bytes]:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    return signing_input, signature


def test_alg_none_is_refused(verifier: TokenVerifier) -> None:
    signing_input, _ = _unsigned({"alg": "none", "typ": "JWT"}, claims())
    assert "algorithm 'none'" in rejected(verifier, signing_input + ".")


def test_hs256_signed_with_the_public_key_is_refused(idp: FakeIdp, verifier: TokenVerifier) -> None:
    public_pem = idp.keys[0].as_pem(private=False)
    signing_input, _ = _unsigned({"alg": "HS256", "kid": "k1"}, claims(preferred_username="mallory"))
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    token = signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    assert "algorithm 'HS256' is not accepted" in rejected(verifier, token)


def test_hs256_cannot_be_configured() -> None:
    with pytest.raises(ValueError, match="HS256"):
        identity(algorithms=("RS256", "HS256"))


def test_unknown_key_id_refetches_once_for_rotation_then_is_rate_limited(idp: FakeIdp) -> None:
    clock = [NOW]
    verifier = TokenVerifier(identity(), fetch=idp.fetch, clock=lambda: clock[0])
    verifier.verify(idp.sign(claims()))
    assert idp.fetches.count(f"{ISSUER}/jwks") == 1
    clock[0] += 31
    idp.keys.append(RSAKey.generate_key(2048, parameters={"kid": "k2"}, private=True))  # rotation
    assert verifier.verify(idp.sign(claims(), key=idp.keys[1])).username == "alice"
    assert idp.fetches.count(f"{ISSUER}/jwks") == 2
    stray = RSAKey.generate_key(2048, parameters={"kid": "k3"}, private=True)
    assert "unknown key id 'k3'" in rejected(verifier, idp.sign(claims(), key=stray))
    assert idp.fetches.count(f"{ISSUER}/jwks") == 2  # within the interval: no fetch for every bad kid
    assert verifier.verify(idp.sign(claims())).username == "alice"  # cached keys still work


@pytest.mark.parametrize("missing", ["sub", "aud", "exp", "iat"])
def test_missing_claims(idp: FakeIdp, verifier: TokenVerifier, missing: str) -> None:
    assert f"no {missing} claim" in rejected(verifier, idp.sign(claims(**{missing: None})))


def test_missing_username_claim(idp: FakeIdp, verifier: TokenVerifier) -> None:
    assert "no preferred_username claim" in rejected(verifier, idp.sign(claims(preferred_username=None)))


@pytest.mark.parametrize("name", ["alice smith", "al!ce", "9lives", "a" * 40, "login", "token", "ali\x1b[2Jce"])
def test_username_claim_that_is_not_a_valid_login(idp: FakeIdp, verifier: TokenVerifier, name: str) -> None:
    message = rejected(verifier, idp.sign(claims(preferred_username=name)))
    assert "login name" in message or "reserved" in message
    assert "\x1b" not in message


def test_nonce_must_match_the_interactive_login(idp: FakeIdp, verifier: TokenVerifier) -> None:
    token = idp.sign(claims(nonce="n-1"))
    assert verifier.verify(token, nonce="n-1").username == "alice"
    assert "nonce" in rejected(verifier, token, nonce="n-2")


def test_not_a_jwt(verifier: TokenVerifier) -> None:
    assert "not a signed JWT" in rejected(verifier, "hello")
    assert "not a signed JWT" in rejected(verifier, "a.b.c")


def test_access_tokens_only_from_workload_issuers(idp: FakeIdp, verifier: TokenVerifier) -> None:
    token = idp.sign(claims(client_id="ci", jti="j1"), typ="at+jwt")
    assert "workload" in rejected(verifier, token)


def test_workload_access_token_rfc9068(idp: FakeIdp) -> None:
    settings = identity(kind="workload", client_id="ci-agent", audience="https://bastion.test", username_prefix="ci-")
    verifier = TokenVerifier(settings, fetch=idp.fetch, clock=lambda: NOW)
    token = idp.sign(
        claims(
            sub="ci-agent", aud="https://bastion.test", azp=None, client_id="ci-agent", jti="j1", groups="deploy ci"
        ),
        typ="at+jwt",
    )
    verified = verifier.verify(token)
    assert (verified.username, verified.groups, verified.token_type) == (
        "ci-ci-agent",
        ("deploy", "ci"),
        "access_token",
    )
    no_jti = idp.sign(claims(sub="ci-agent", aud="https://bastion.test", azp=None, client_id="ci-agent"), typ="at+jwt")
    assert "no jti claim" in rejected(verifier, no_jti)


def test_discovery_must_name_the_configured_issuer(idp: FakeIdp) -> None:
    def lying(url: str) -> dict[str, Any]:
        document = idp.fetch(url)
        return {**document, "issuer": "https://evil.example"} if "openid-configuration" in url else document

    verifier = TokenVerifier(identity(), fetch=lying, clock=lambda: NOW)
    assert "discovery names issuer" in rejected(verifier, idp.sign(claims()))


def test_usernames_from_two_issuers_cannot_collide(idp: FakeIdp) -> None:
    human = IssuerSettings(name="corp", issuer=ISSUER, client_id="bastion")
    workload = IssuerSettings(
        name="ci", issuer="https://ci.example", client_id="x", kind="workload", username_prefix="ci-"
    )
    verifier = TokenVerifier(IdentitySettings(issuers=(human, workload)), fetch=idp.fetch, clock=lambda: NOW)
    assert "another issuer's username prefix" in rejected(verifier, idp.sign(claims(preferred_username="ci-runner")))
    with pytest.raises(ValueError, match="could collide"):
        IdentitySettings(issuers=(human, workload.model_copy(update={"username_prefix": ""})))
    with pytest.raises(ValueError, match="could collide"):
        other = workload.model_copy(update={"name": "ci2", "issuer": "https://b.example", "username_prefix": "ci-x"})
        IdentitySettings(issuers=(human, workload, other))


def test_plain_http_issuer_only_on_loopback() -> None:
    with pytest.raises(ValueError, match="https"):
        IssuerSettings(name="corp", issuer="http://idp.example", client_id="bastion")
    assert IssuerSettings(name="dev", issuer="http://127.0.0.1:9000", client_id="bastion").issuer


def test_real_clock_is_used_by_default(idp: FakeIdp) -> None:
    verifier = TokenVerifier(identity(), fetch=idp.fetch)
    now = time.time()
    assert verifier.verify(idp.sign(claims(exp=now + 60, iat=now))).username == "alice"


def test_one_provider_for_people_and_workloads_is_told_apart_by_token_type_and_audience(idp: FakeIdp) -> None:
    human = IssuerSettings(name="corp", issuer=ISSUER, client_id="bastion")
    workload = IssuerSettings(
        name="corp-ci",
        issuer=ISSUER,
        client_id="ci-agent",
        audience="https://bastion.test",
        kind="workload",
        username_prefix="ci-",
    )
    verifier = TokenVerifier(IdentitySettings(issuers=(human, workload)), fetch=idp.fetch, clock=lambda: NOW)
    assert verifier.verify(idp.sign(claims())).issuer.name == "corp"
    access = claims(sub="ci-agent", aud="https://bastion.test", azp=None, client_id="ci-agent", jti="j1")
    verified = verifier.verify(idp.sign(access, typ="at+jwt"))
    assert (verified.issuer.name, verified.username) == ("corp-ci", "ci-ci-agent")
