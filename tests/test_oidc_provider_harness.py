"""The oidc-provider harness works: a real OpenID provider on loopback, driven unattended.

The signatures are checked against the provider's JWKS with `cryptography` (RS256), so what the
bastion will verify is what these tests saw.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import secrets
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.oidc_provider_harness import OidcProvider, OidcProviderError, decode_jwt, start_oidc_provider

pytestmark = pytest.mark.e2e  # every test here runs node's oidc-provider


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    with start_oidc_provider(tmp_path_factory.mktemp("oidc")) as provider:
        yield provider


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify_rs256(idp: OidcProvider, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check the RS256 signature against the provider's JWKS; return header and payload."""
    header, payload = decode_jwt(token)
    assert header["alg"] == "RS256"
    with urllib.request.urlopen(idp.jwks_uri, timeout=10) as response:
        keys = {key["kid"]: key for key in json.load(response)["keys"]}
    jwk = keys[header["kid"]]
    assert "d" not in jwk, "the JWKS must publish public keys only"
    public = rsa.RSAPublicNumbers(int.from_bytes(_b64(jwk["e"])), int.from_bytes(_b64(jwk["n"]))).public_key()
    signing_input, _, signature = token.rpartition(".")
    public.verify(_b64(signature), signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return header, payload


def test_discovery(idp: OidcProvider) -> None:
    meta = idp.discovery()
    assert meta["issuer"] == idp.issuer
    assert idp.issuer.startswith("http://127.0.0.1:")
    assert meta["device_authorization_endpoint"] == f"{idp.issuer}/device/auth"
    assert {"client_credentials", "urn:ietf:params:oauth:grant-type:device_code"} <= set(meta["grant_types_supported"])
    assert {"groups", "preferred_username"} <= set(meta["claims_supported"])
    assert meta["code_challenge_methods_supported"] == ["S256"]


def test_device_flow_id_token_carries_identity_and_groups(idp: OidcProvider) -> None:
    tokens = idp.device_flow_token("alice")
    _, claims = verify_rs256(idp, tokens["id_token"])
    assert claims["iss"] == idp.issuer
    assert claims["aud"] == idp.device_client_id == "bastion-cli"
    assert claims["sub"] == "alice"
    assert claims["preferred_username"] == "alice"
    assert claims["groups"] == ["dev", "approvers"]
    assert claims["email"] == "alice@example.test"
    assert claims["exp"] > claims["iat"]

    _, bob = verify_rs256(idp, idp.device_flow_token("bob")["id_token"])
    assert (bob["preferred_username"], bob["groups"]) == ("bob", ["dev"])


def test_device_flow_denied_and_pending(idp: OidcProvider) -> None:
    start = idp.device_authorization()
    assert start["interval"] == 1
    assert start["verification_uri"] == idp.verification_uri
    with pytest.raises(OidcProviderError, match="not approved"):  # authorization_pending, then the bound
        idp.poll_device_token(start["device_code"], timeout=0)
    idp.deny_device(start["user_code"])
    with pytest.raises(OidcProviderError, match="access_denied"):
        idp.poll_device_token(start["device_code"], timeout=5)
    with pytest.raises(OidcProviderError, match="refused"):
        idp.approve_device(start["user_code"])  # a code is good for one answer


def test_client_credentials_access_token_is_rfc9068_jwt(idp: OidcProvider) -> None:
    response = idp.client_credentials_token()
    assert response["token_type"] == "Bearer"
    header, claims = verify_rs256(idp, response["access_token"])
    assert header["typ"] == "at+jwt"
    assert claims["iss"] == idp.issuer
    assert claims["aud"] == idp.audience == "https://bastion.test"
    assert claims["sub"] == claims["client_id"] == idp.workload_client_id == "ci-agent"
    assert claims["preferred_username"] == "ci-agent"
    assert claims["groups"] == ["ci"]
    assert claims["exp"] - claims["iat"] == 600


def test_authorization_code_with_pkce_on_loopback(idp: OidcProvider) -> None:
    received: dict[str, list[str]] = {}

    class Callback(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            received.update(urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Callback)
    server.timeout = 10
    listener = threading.Thread(target=server.handle_request, daemon=True)
    listener.start()
    try:
        redirect_uri = f"http://127.0.0.1:{server.server_port}/callback"  # any loopback port is allowed
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        nonce, state = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
        query = {
            "client_id": idp.device_client_id,
            "response_type": "code",
            "scope": idp.scope,
            "redirect_uri": redirect_uri,
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        location = idp.complete_authorization(f"{idp.endpoint('authorization')}?{urllib.parse.urlencode(query)}", "bob")
        listener.join(10)
    finally:
        server.server_close()
    assert location.startswith(redirect_uri + "?")
    assert received["state"] == [state]
    assert received["iss"] == [idp.issuer]
    request = urllib.request.Request(
        idp.endpoint("token"),
        data=urllib.parse.urlencode(
            {
                "grant_type": "authorization_code",
                "code": received["code"][0],
                "redirect_uri": redirect_uri,
                "client_id": idp.device_client_id,
                "code_verifier": verifier,
            }
        ).encode(),
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        tokens = json.load(response)
    _, claims = verify_rs256(idp, tokens["id_token"])
    assert (claims["nonce"], claims["preferred_username"], claims["groups"]) == (nonce, "bob", ["dev"])


def test_stop_ends_the_node_process(tmp_path: Path) -> None:
    provider = start_oidc_provider(tmp_path)
    provider.stop()
    assert provider.process.poll() is not None
    assert "READY " + provider.issuer in (tmp_path / "oidc-provider.log").read_text()
    provider.stop()  # idempotent
