"""`bastion dev-idp` over real HTTP: discovery, JWKS, device flow, code + PKCE, client credentials, loopback only.

The tests that serve the provider over HTTP carry the e2e mark; the ones on its parts alone do not.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from authlib.oidc.discovery import OpenIDProviderMetadata
from click.testing import CliRunner
from joserfc import jwt
from joserfc.jwk import KeySet

from bastion.cli.dev_idp import dev_idp
from bastion.demo.devidp import (
    Client,
    DevIdp,
    DevIdpError,
    RunningIdp,
    SigningKey,
    User,
    load_directory,
    parse_listen,
    parse_user_spec,
    serve_dev_idp,
    start_dev_idp,
)
from tests.conftest import wait_until

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
REDIRECT = "http://127.0.0.1:53682/callback"
SECRET = "s3cret-for-tests"


@dataclass
class Reply:
    status: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def call(url: str, form: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> Reply:
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with _opener.open(request, timeout=10) as response:
            return Reply(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        return Reply(error.code, error.headers, error.read())


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def serve(key: SigningKey) -> Iterator[Callable[..., RunningIdp]]:
    """Start a DevIdp (the default users, a public and a confidential client) on a free loopback port."""
    started: list[RunningIdp] = []

    def start(**options: Any) -> RunningIdp:
        clients = [
            Client("bastion"),
            Client("ci-runner", secret=SECRET, grant_types=frozenset({"client_credentials"}), groups=("ci",)),
        ]
        running = start_dev_idp(DevIdp(clients=clients, key=key, **options), "127.0.0.1", 0)
        started.append(running)
        return running

    yield start
    for running in started:
        running.close()


def verify(token: str, issuer: str) -> jwt.Token:
    """Verify a JWT the way a relying party does: keys from the JWKS found through discovery."""
    metadata = call(f"{issuer}/.well-known/openid-configuration").json()
    keys = KeySet.import_key_set(call(metadata["jwks_uri"]).json())
    return jwt.decode(token, keys, algorithms=["RS256"])


def start_device(running: RunningIdp, scope: str = "openid profile email groups") -> dict[str, Any]:
    reply = call(f"{running.url}/device_authorization", {"client_id": "bastion", "scope": scope})
    assert reply.status == 200, reply.text
    return reply.json()


def poll(running: RunningIdp, device_code: str) -> Reply:
    form = {"grant_type": DEVICE_GRANT, "device_code": device_code, "client_id": "bastion"}
    return call(f"{running.url}/token", form)


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize_params(challenge: str, **extra: str) -> dict[str, str]:
    return {
        "response_type": "code",
        "client_id": "bastion",
        "redirect_uri": REDIRECT,
        "scope": "openid profile groups",
        "state": "st-1",
        "nonce": "n-" + secrets.token_hex(4),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }


def query_of(location: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))


# Discovery and keys


@pytest.mark.e2e
def test_discovery_document_is_valid_openid_provider_metadata(serve: Callable[..., RunningIdp]) -> None:
    running = serve()
    assert running.url.startswith("http://127.0.0.1:")
    doc = call(f"{running.url}/.well-known/openid-configuration").json()
    OpenIDProviderMetadata(doc).validate()
    assert doc["issuer"] == running.url
    assert doc["device_authorization_endpoint"] == f"{running.url}/device_authorization"
    assert doc["token_endpoint"] == f"{running.url}/token"
    assert doc["jwks_uri"] == f"{running.url}/jwks"
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]
    assert set(doc["grant_types_supported"]) == {"authorization_code", "client_credentials", DEVICE_GRANT}


@pytest.mark.e2e
def test_jwks_publishes_only_the_public_key_with_its_kid(serve: Callable[..., RunningIdp], key: SigningKey) -> None:
    running = serve()
    (published,) = call(f"{running.url}/jwks").json()["keys"]
    assert published["kid"] == key.kid and published["kty"] == "RSA" and published["alg"] == "RS256"
    assert "d" not in published and "p" not in published


def test_a_key_file_is_made_once_and_then_reused(tmp_path: Path) -> None:
    path = tmp_path / "idp.pem"
    first = SigningKey.from_file(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert SigningKey.from_file(path).kid == first.kid
    (tmp_path / "bad.pem").write_text("not a key\n")
    with pytest.raises(DevIdpError, match="not a PEM RSA private key"):
        SigningKey.from_file(tmp_path / "bad.pem")


# Device authorization grant (RFC 8628)


@pytest.mark.e2e
def test_device_flow_pending_then_slow_down_then_approved_by_the_form(serve: Callable[..., RunningIdp]) -> None:
    running = serve()
    device = start_device(running)
    assert device["verification_uri"] == f"{running.url}/device"
    assert device["verification_uri_complete"].endswith(device["user_code"])
    assert device["interval"] == 5 and device["expires_in"] == 600

    assert poll(running, device["device_code"]).json()["error"] == "authorization_pending"
    assert poll(running, device["device_code"]).json()["error"] == "slow_down"

    page = call(device["verification_uri_complete"])
    assert page.status == 200 and device["user_code"] in page.text and "NOT FOR PRODUCTION" in page.text
    assert "alice" in page.text and "Approve" in page.text and "Deny" in page.text
    decision = call(f"{running.url}/device", {"user_code": device["user_code"], "user": "alice", "action": "approve"})
    assert decision.status == 200 and "Approved as alice" in decision.text

    reply = poll(running, device["device_code"])
    assert reply.status == 200, reply.text
    tokens = reply.json()
    assert tokens["token_type"] == "Bearer" and tokens["scope"] == "openid profile email groups"
    id_token = verify(tokens["id_token"], running.url)
    claims = id_token.claims
    assert claims["iss"] == running.url and claims["aud"] == "bastion" and claims["azp"] == "bastion"
    assert claims["sub"] == "alice" and claims["preferred_username"] == "alice"
    assert claims["groups"] == ["dev", "approvers"] and claims["email"] == "alice@example.com"
    assert claims["name"] == "Alice" and claims["exp"] > claims["iat"] and claims["auth_time"] <= claims["iat"]
    assert "nonce" not in claims

    assert poll(running, device["device_code"]).json()["error"] == "invalid_request"  # a device code is used once
    userinfo = call(f"{running.url}/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert userinfo.json()["groups"] == ["dev", "approvers"]


@pytest.mark.e2e
def test_device_flow_denied_gives_access_denied(serve: Callable[..., RunningIdp]) -> None:
    running = serve()
    device = start_device(running)
    decision = call(f"{running.url}/device", {"user_code": device["user_code"].lower(), "action": "deny"})
    assert decision.status == 200 and "Denied" in decision.text
    assert poll(running, device["device_code"]).json()["error"] == "access_denied"
    again = call(f"{running.url}/device", {"user_code": device["user_code"], "user": "bob", "action": "approve"})
    assert again.status == 400 and "already denied" in again.text


@pytest.mark.e2e
def test_device_code_expires(serve: Callable[..., RunningIdp]) -> None:
    running = serve(device_expires_in=1)
    device = start_device(running)
    assert device["expires_in"] == 1
    # The provider keeps no clock a test can set: wait for this code's own expiry, no longer.
    pending = running.idp.device(device["device_code"])
    assert pending is not None and not pending.is_expired()
    wait_until(pending.is_expired, "the device code to expire")
    assert poll(running, device["device_code"]).json()["error"] == "expired_token"
    page = call(device["verification_uri_complete"])
    assert page.status == 400 and "has expired" in page.text


@pytest.mark.e2e
def test_device_flow_refuses_unknown_codes_users_and_clients(serve: Callable[..., RunningIdp]) -> None:
    running = serve()
    device = start_device(running, scope="openid")
    unknown_user = call(
        f"{running.url}/device", {"user_code": device["user_code"], "user": "mallory", "action": "approve"}
    )
    assert unknown_user.status == 400 and "unknown user" in unknown_user.text
    assert call(f"{running.url}/device?user_code=XXXX-XXXX").status == 400
    workload = call(f"{running.url}/device_authorization", {"client_id": "ci-runner", "client_secret": SECRET})
    assert workload.json()["error"] == "unauthorized_client"
    assert call(f"{running.url}/device_authorization", {"client_id": "nobody"}).json()["error"] == "invalid_client"


@pytest.mark.e2e
def test_auto_approve_gives_tokens_at_the_first_poll_and_no_id_token_without_openid(
    serve: Callable[..., RunningIdp],
) -> None:
    running = serve(auto_approve="carol")
    device = start_device(running, scope="profile")
    tokens = poll(running, device["device_code"]).json()
    assert "id_token" not in tokens
    access = verify(tokens["access_token"], running.url)
    assert access.header["typ"] == "at+jwt" and access.claims["sub"] == "carol" and access.claims["groups"] == ["ops"]


# Authorization code with PKCE (RFC 7636) on a loopback redirect (RFC 8252)


@pytest.mark.e2e
def test_code_flow_with_pkce_refuses_a_wrong_verifier_and_accepts_the_right_one_once(
    serve: Callable[..., RunningIdp],
) -> None:
    running = serve()
    verifier, challenge = pkce_pair()
    params = authorize_params(challenge)
    page = call(f"{running.url}/authorize?{urllib.parse.urlencode(params)}")
    assert page.status == 200 and "Approve" in page.text and "bob" in page.text

    approved = call(f"{running.url}/authorize", {**params, "user": "bob", "action": "approve"})
    assert approved.status == 302
    location = approved.headers["Location"]
    assert location.startswith(REDIRECT + "?") and query_of(location)["state"] == "st-1"
    code = query_of(location)["code"]

    exchange = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": "bastion"}
    wrong = call(f"{running.url}/token", {**exchange, "code_verifier": pkce_pair()[0]})
    assert wrong.status == 400 and wrong.json()["error"] == "invalid_grant"
    assert call(f"{running.url}/token", exchange).json()["error"] == "invalid_request"  # no verifier at all

    right = call(f"{running.url}/token", {**exchange, "code_verifier": verifier})
    assert right.status == 200, right.text
    claims = verify(right.json()["id_token"], running.url).claims
    assert claims["nonce"] == params["nonce"] and claims["sub"] == "bob" and claims["aud"] == "bastion"
    assert claims["groups"] == ["dev"] and "auth_time" in claims

    reused = call(f"{running.url}/token", {**exchange, "code_verifier": verifier})
    assert reused.json()["error"] == "invalid_grant"


@pytest.mark.e2e
def test_code_flow_requires_s256_and_a_loopback_redirect(serve: Callable[..., RunningIdp]) -> None:
    running = serve()
    verifier, _ = pkce_pair()
    plain = authorize_params(verifier, code_challenge_method="plain")
    refused = call(f"{running.url}/authorize?{urllib.parse.urlencode(plain)}")
    assert refused.status == 302 and query_of(refused.headers["Location"])["error"] == "invalid_request"

    _, challenge = pkce_pair()
    elsewhere = authorize_params(challenge, redirect_uri="http://evil.example/callback")
    page = call(f"{running.url}/authorize?{urllib.parse.urlencode(elsewhere)}")
    assert page.status == 400 and "Location" not in page.headers and "not supported" in page.text


@pytest.mark.e2e
def test_code_flow_denied_and_auto_approved(serve: Callable[..., RunningIdp]) -> None:
    running = serve()
    _, challenge = pkce_pair()
    denied = call(f"{running.url}/authorize", {**authorize_params(challenge), "action": "deny"})
    assert denied.status == 302 and query_of(denied.headers["Location"])["error"] == "access_denied"

    auto = serve(auto_approve="alice")
    at_once = call(f"{auto.url}/authorize?{urllib.parse.urlencode(authorize_params(challenge))}")
    assert at_once.status == 302 and "code" in query_of(at_once.headers["Location"])


# Client credentials with RFC 9068 JWT access tokens


@pytest.mark.e2e
@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_client_credentials_give_a_jwt_access_token_that_verifies(
    serve: Callable[..., RunningIdp], method: str
) -> None:
    running = serve(audience="bastion-workloads")
    form = {"grant_type": "client_credentials", "scope": "groups"}
    headers = {}
    if method == "client_secret_basic":
        headers["Authorization"] = "Basic " + base64.b64encode(f"ci-runner:{SECRET}".encode()).decode()
    else:
        form |= {"client_id": "ci-runner", "client_secret": SECRET}
    reply = call(f"{running.url}/token", form, headers)
    assert reply.status == 200, reply.text
    token = verify(reply.json()["access_token"], running.url)
    assert token.header["typ"] == "at+jwt" and token.header["alg"] == "RS256"
    claims = token.claims
    assert claims["iss"] == running.url and claims["sub"] == "ci-runner" and claims["client_id"] == "ci-runner"
    assert claims["aud"] == "bastion-workloads" and claims["scope"] == "groups" and claims["groups"] == ["ci"]
    assert claims["exp"] - claims["iat"] == 3600 and len(claims["jti"]) >= 16


@pytest.mark.e2e
def test_client_credentials_refuse_a_wrong_secret_and_a_public_client(serve: Callable[..., RunningIdp]) -> None:
    running = serve()
    wrong = call(
        f"{running.url}/token", {"grant_type": "client_credentials", "client_id": "ci-runner", "client_secret": "x"}
    )
    assert wrong.status in (400, 401) and wrong.json()["error"] == "invalid_client"
    public = call(f"{running.url}/token", {"grant_type": "client_credentials", "client_id": "bastion"})
    assert public.json()["error"] == "invalid_client"


# Loopback only


def test_a_non_loopback_listen_is_refused(key: SigningKey) -> None:
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen("[::1]:9400") == ("::1", 9400)
    assert parse_listen("localhost:9400") == ("127.0.0.1", 9400)
    for listen in ("0.0.0.0:9400", "192.168.1.5:9400", "[::]:9400", "idp.example.com:9400"):
        with pytest.raises(DevIdpError, match="loopback"):
            parse_listen(listen)
    with pytest.raises(DevIdpError, match="loopback"):
        start_dev_idp(DevIdp(key=key), host="0.0.0.0", port=0)

    result = CliRunner().invoke(dev_idp, ["--listen", "0.0.0.0:9400"])
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert line.startswith("bastion: --listen 0.0.0.0:9400:") and "loopback" in line


@pytest.mark.e2e
def test_a_request_for_another_host_name_is_refused(serve: Callable[..., RunningIdp]) -> None:
    running = serve()
    reply = call(f"{running.url}/jwks", headers={"Host": "rebound.example:80"})
    assert reply.status == 400 and "Host" in reply.json()["error_description"]


# Users, clients and the command


def test_users_from_options_and_files(tmp_path: Path) -> None:
    assert parse_user_spec("dave:dev,ops") == User("dave", ("dev", "ops"))
    assert parse_user_spec("erin") == User("erin")
    with pytest.raises(DevIdpError, match="NAME:GROUP"):
        parse_user_spec("bad name:dev")
    (tmp_path / "ci.secret").write_text("from-a-file\n")
    toml = tmp_path / "users.toml"
    toml.write_text(
        '[users.dave]\ngroups = ["dev"]\nemail = "dave@corp.example"\n'
        '[clients.deploy-bot]\nsecret_file = "ci.secret"\ngroups = ["deploy"]\n'
    )
    users, clients = load_directory(toml)
    assert users == [User("dave", ("dev",), "dave@corp.example")]
    assert clients is not None and clients[0].secret == "from-a-file" and clients[0].groups == ("deploy",)
    as_json = tmp_path / "users.json"
    as_json.write_text(json.dumps({"users": {"frank": {"groups": ["ops"], "gropus": []}}}))
    with pytest.raises(DevIdpError, match="unknown key 'gropus'"):
        load_directory(as_json)
    with pytest.raises(DevIdpError, match="no such user"):
        DevIdp(users=users, auto_approve="alice")


@pytest.mark.e2e
def test_serve_dev_idp_stops_cleanly_at_the_end_of_the_block(key: SigningKey) -> None:
    with serve_dev_idp(DevIdp(key=key)) as running:
        assert call(f"{running.url}/jwks").status == 200
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{running.url}/jwks", timeout=2)


@pytest.mark.e2e
def test_the_command_prints_the_banner_and_serves_until_terminated(tmp_path: Path) -> None:
    code = "from bastion.cli.dev_idp import dev_idp; dev_idp()"
    args = ["--listen", "127.0.0.1:0", "--json", "--user", "dave:dev", "--auto-approve", "dave"]
    command = [sys.executable, "-c", code, *args]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None and process.stderr is not None
            summary = json.loads(process.stdout.readline())
            assert "NOT FOR PRODUCTION" in process.stderr.readline()
            assert summary["users"] == {"dave": ["dev"]} and summary["auto_approve"] == "dave"
            secret = next(c["secret"] for c in summary["clients"] if c["client_id"] == "ci-runner")
            form = {"grant_type": "client_credentials", "client_id": "ci-runner", "client_secret": secret}
            assert call(f"{summary['issuer']}/token", form).status == 200
        finally:
            process.terminate()
            assert process.wait(timeout=10) == 0
