"""authlib's authorization server, wired to the development IdP: grants, JWT access tokens, ID tokens."""

from __future__ import annotations

import json
import time
from typing import Any

from authlib.oauth2.rfc6749 import AuthorizationServer, OAuth2Request, grants
from authlib.oauth2.rfc6749.errors import InvalidRequestError, UnauthorizedClientError
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc8628 import DEVICE_CODE_GRANT_TYPE, DeviceAuthorizationEndpoint, DeviceCodeGrant
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from authlib.oidc.core import OpenIDCode, OpenIDToken, UserInfo
from joserfc.jwk import KeySet

from bastion.demo.devidp.directory import SCOPES, Client, User
from bastion.demo.devidp.keys import ALGORITHM
from bastion.demo.devidp.messages import FormRequest, HttpRequest, HttpResponse, json_request
from bastion.demo.devidp.provider import AuthorizationCode, DeviceAuthorization, DevIdp
from bastion.logs import log

S256 = "S256"


class DevAuthorizationServer(AuthorizationServer):
    """authlib's AuthorizationServer over HttpRequest/HttpResponse values, for one DevIdp and issuer."""

    def __init__(self, idp: DevIdp, issuer: str) -> None:
        super().__init__(scopes_supported=list(SCOPES))
        self.idp = idp
        self.issuer = issuer
        self.register_token_generator("default", AccessTokens(idp, issuer))
        self.register_grant(CodeGrant, [PkceS256(required=True), CodeIdToken(idp, issuer)])
        self.register_grant(DeviceGrant, [DeviceIdToken(idp, issuer)])
        self.register_grant(ClientCredentialsGrant)
        self.register_endpoint(DeviceEndpoint(self))

    def query_client(self, client_id: str) -> Client | None:
        return self.idp.clients.get(client_id)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        user: User | None = request.user
        log(
            "devidp.token",
            client_id=request.client.get_client_id(),
            user=user.name if user else None,
            scope=token.get("scope"),
            grant_type=request.payload.grant_type,
        )

    def create_oauth2_request(self, request: HttpRequest | OAuth2Request) -> OAuth2Request:
        return request if isinstance(request, OAuth2Request) else FormRequest(request)

    def create_json_request(self, request: HttpRequest) -> Any:
        return json_request(request)

    def handle_response(self, status: int, body: Any, headers: list[tuple[str, str]]) -> HttpResponse:
        if isinstance(body, dict):
            return HttpResponse(status, json.dumps(body).encode(), list(headers))
        return HttpResponse(status, str(body or "").encode(), list(headers))

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """No signal system here: authentication outcomes are logged with the token."""


class AccessTokens(JWTBearerTokenGenerator):
    """RFC 9068 JWT access tokens (typ at+jwt) signed with the IdP key; the kid comes from the key set."""

    def __init__(self, idp: DevIdp, issuer: str) -> None:
        super().__init__(issuer, alg=ALGORITHM, expires_generator=idp.token_ttl)
        self.idp = idp

    def get_jwks(self) -> KeySet:
        return self.idp.key.key_set

    def get_audiences(self, client: Client, user: User | None, scope: str) -> str:
        return client.audience or self.idp.audience

    def get_extra_claims(self, client: Client, grant_type: str, user: User | None, scope: str) -> dict[str, Any]:
        if user is None:
            return {"groups": list(client.groups)}
        return {"preferred_username": user.name, "groups": list(user.groups)}


class _IdTokens:
    """What the ID tokens of both user flows share: key, header, issuer, audience and the user's claims."""

    def __init__(self, idp: DevIdp, issuer: str) -> None:
        super().__init__()
        self.idp = idp
        self.issuer = issuer

    def resolve_client_private_key(self, client: Client) -> KeySet:
        return self.idp.key.key_set

    def get_client_algorithm(self, client: Client) -> str:
        return ALGORITHM

    def get_encode_header(self, client: Client) -> dict[str, str]:
        return {"alg": ALGORITHM, "kid": self.idp.key.kid}

    def get_client_claims(self, client: Client) -> dict[str, Any]:
        client_id = client.get_client_id()
        return {"iss": self.issuer, "aud": client_id, "azp": client_id, "exp": int(time.time()) + self.idp.token_ttl}

    def generate_user_info(self, user: User, scope: str) -> UserInfo:
        return UserInfo(user.claims())


class CodeIdToken(_IdTokens, OpenIDCode):
    """OpenID Connect for the code flow: nonce checked against replay, echoed with auth_time."""

    def exists_nonce(self, nonce: str, request: OAuth2Request) -> bool:
        return self.idp.nonce_used(request.payload.client_id, nonce)


class DeviceIdToken(_IdTokens, OpenIDToken):
    """An ID token for the device flow when the scope has openid; auth_time is when the user approved."""

    def get_compatible_claims(self, request: OAuth2Request) -> dict[str, Any]:
        claims: dict[str, Any] = super().get_compatible_claims(request)
        device: DeviceAuthorization = request.credential
        if device.decided_at:
            claims["auth_time"] = device.decided_at
        return claims


class PkceS256(CodeChallenge):
    """PKCE is required on every authorization request, and only with S256 (no `plain`)."""

    DEFAULT_CODE_CHALLENGE_METHOD = S256
    SUPPORTED_CODE_CHALLENGE_METHOD = [S256]

    def validate_code_challenge(self, grant: grants.BaseGrant, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge") or data.get("code_challenge_method") != S256:
            raise InvalidRequestError("PKCE is required: send code_challenge with code_challenge_method=S256")
        super().validate_code_challenge(grant, redirect_uri)


class CodeGrant(grants.AuthorizationCodeGrant):
    """Authorization code (RFC 6749 §4.1) for public clients (none) and confidential ones."""

    TOKEN_ENDPOINT_AUTH_METHODS = ["none", "client_secret_basic", "client_secret_post"]

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        data = request.payload.data
        idp: DevIdp = self.server.idp
        idp.save_code(
            AuthorizationCode(
                code=code,
                client_id=request.client.get_client_id(),
                redirect_uri=request.payload.redirect_uri,
                scope=request.scope,
                user=request.user,
                auth_time=int(time.time()),
                expires_at=time.time() + idp.code_ttl,
                code_challenge=data["code_challenge"],
                code_challenge_method=data["code_challenge_method"],
                nonce=data.get("nonce") or None,
            )
        )

    def query_authorization_code(self, code: str, client: Client) -> AuthorizationCode | None:
        return self.server.idp.code(code, client.get_client_id())

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        self.server.idp.delete_code(authorization_code.code)

    def authenticate_user(self, authorization_code: AuthorizationCode) -> User:
        return authorization_code.user


class DeviceGrant(DeviceCodeGrant):
    """Polling for a device code: pending, slow_down, expired_token, access_denied, then tokens once."""

    def query_device_credential(self, device_code: str) -> DeviceAuthorization | None:
        return self.server.idp.device(device_code)

    def query_user_grant(self, user_code: str) -> tuple[User | None, bool] | None:
        return self.server.idp.device_grant(user_code)

    def should_slow_down(self, credential: DeviceAuthorization) -> bool:
        return self.server.idp.poll_too_fast(credential)

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        response = super().create_token_response()
        self.server.idp.finish_device(self.request.credential.device_code)  # a device code gives tokens once
        return response


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    """Client credentials (RFC 6749 §4.4) for confidential clients, with the secret in Basic or the form."""

    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


class DeviceEndpoint(DeviceAuthorizationEndpoint):
    """POST /device_authorization (RFC 8628 §3.1), with the lifetime and interval of the DevIdp."""

    def __init__(self, server: DevAuthorizationServer) -> None:
        super().__init__(server)
        self.EXPIRES_IN = server.idp.device_expires_in
        self.INTERVAL = server.idp.device_interval

    def authenticate_client(self, request: OAuth2Request) -> Client:
        client: Client = super().authenticate_client(request)
        if not client.check_grant_type(DEVICE_CODE_GRANT_TYPE):
            raise UnauthorizedClientError(f"client {client.client_id} may not use the device flow")
        return client

    def get_verification_uri(self) -> str:
        return f"{self.server.issuer}/device"

    def save_device_credential(self, client_id: str, scope: str | None, data: dict[str, Any]) -> None:
        idp: DevIdp = self.server.idp
        idp.start_device(client_id, scope or "", data["device_code"], data["user_code"])
