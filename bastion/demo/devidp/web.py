"""The development IdP's routes: HttpRequest in, HttpResponse out (no sockets), over authlib's server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from authlib.oauth2.rfc6749 import OAuth2Error
from joserfc import jwt
from joserfc.errors import JoseError

from bastion.demo.devidp import pages
from bastion.demo.devidp.directory import (
    AUTHORIZATION_CODE,
    CLIENT_CREDENTIALS,
    DEVICE_CODE,
    SCOPES,
    SECRET_METHODS,
    DevIdpError,
)
from bastion.demo.devidp.keys import ALGORITHM
from bastion.demo.devidp.messages import HttpRequest, HttpResponse
from bastion.demo.devidp.oauth import S256, DevAuthorizationServer
from bastion.demo.devidp.provider import DevIdp
from bastion.logs import log

Route = Callable[[HttpRequest], HttpResponse]
CLAIMS = ("iss", "sub", "aud", "azp", "exp", "iat", "auth_time", "nonce", "preferred_username", "name", "email")


class IdpApp:
    """Every endpoint of the development IdP for one issuer (http://127.0.0.1:PORT)."""

    def __init__(self, idp: DevIdp, issuer: str) -> None:
        self.idp = idp
        self.issuer = issuer
        self.server = DevAuthorizationServer(idp, issuer)
        port = urlsplit(issuer).port
        self._hosts = {urlsplit(issuer).netloc, f"localhost:{port}"}
        self._routes: dict[tuple[str, str], Route] = {
            ("GET", "/"): self.index,
            ("GET", "/.well-known/openid-configuration"): self.discovery,
            ("GET", "/jwks"): self.jwks,
            ("POST", "/device_authorization"): self.device_authorization,
            ("POST", "/token"): self.server.create_token_response,
            ("GET", "/device"): self.device_page,
            ("POST", "/device"): self.device_decision,
            ("GET", "/authorize"): self.authorize_page,
            ("POST", "/authorize"): self.authorize_decision,
            ("GET", "/userinfo"): self.userinfo,
        }

    def handle(self, request: HttpRequest) -> HttpResponse:
        # A Host check defeats DNS rebinding: a web page cannot talk to this loopback service under its own name.
        if request.headers.get("Host", "") not in self._hosts:
            return _error_json(400, "invalid_request", f"unexpected Host header; use {self.issuer}")
        route = self._routes.get((request.method, request.path))
        if route is not None:
            return route(request)
        if any(path == request.path for _, path in self._routes):
            return _error_json(405, "invalid_request", f"{request.method} is not allowed on {request.path}")
        return _error_json(404, "not_found", f"no such endpoint {request.path}; see {self.issuer}/")

    # Metadata

    def discovery(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse.json(200, self.metadata(), cache=True)

    def metadata(self) -> dict[str, Any]:
        """OpenID Provider Metadata (OpenID Connect Discovery 1.0 §3, RFC 8414, RFC 8628 §4)."""
        base = self.issuer
        return {
            "issuer": base,
            "authorization_endpoint": f"{base}/authorize",
            "token_endpoint": f"{base}/token",
            "device_authorization_endpoint": f"{base}/device_authorization",
            "userinfo_endpoint": f"{base}/userinfo",
            "jwks_uri": f"{base}/jwks",
            "scopes_supported": list(SCOPES),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": [AUTHORIZATION_CODE, DEVICE_CODE, CLIENT_CREDENTIALS],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [ALGORITHM],
            "token_endpoint_auth_methods_supported": ["none", *SECRET_METHODS],
            "code_challenge_methods_supported": [S256],
            "claims_supported": [*CLAIMS, "email_verified", "groups"],
            "request_parameter_supported": False,
            "request_uri_parameter_supported": False,
        }

    def jwks(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse.json(200, self.idp.key.jwks(), cache=True)

    def index(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse.html(200, pages.index(self.issuer, self.idp.users.values(), self.idp.clients.values()))

    # Device flow (RFC 8628)

    def device_authorization(self, request: HttpRequest) -> HttpResponse:
        return self.server.create_endpoint_response("device_authorization", request)

    def device_page(self, request: HttpRequest) -> HttpResponse:
        user_code = request.params().get("user_code", "").strip()
        if not user_code:
            return HttpResponse.html(200, pages.device_entry())
        try:
            device = self.idp.pending_device(user_code)
        except DevIdpError as exc:
            return HttpResponse.html(400, pages.device_entry(str(exc)))
        return HttpResponse.html(200, pages.device_consent(device, self.idp.users.values()))

    def device_decision(self, request: HttpRequest) -> HttpResponse:
        """The approval form's POST (user_code, user, action=approve|deny); scripts may post it too."""
        params = request.params()
        action = params.get("action", "")
        if action not in ("approve", "deny"):
            return HttpResponse.html(400, pages.device_entry("action must be approve or deny"))
        try:
            device = self.idp.decide_device(params.get("user_code", ""), params.get("user"), action == "approve")
        except DevIdpError as exc:
            return HttpResponse.html(400, pages.device_entry(str(exc)))
        return HttpResponse.html(200, pages.device_done(device))

    # Authorization code with PKCE (RFC 6749 §4.1, RFC 7636, RFC 8252)

    def authorize_page(self, request: HttpRequest) -> HttpResponse:
        try:
            grant = self.server.get_consent_grant(request)
        except OAuth2Error as error:
            return self._authorize_error(request, error)
        if self.idp.auto_approve:
            return self._authorize(request, grant, self.idp.auto_approve)
        consent = pages.authorize_consent(
            request.params(), grant.client.get_client_id(), grant.request.scope, self.idp.users.values()
        )
        return HttpResponse.html(200, consent)

    def authorize_decision(self, request: HttpRequest) -> HttpResponse:
        params = request.params()
        try:
            grant = self.server.get_consent_grant(request)
            user = self.idp.user(params.get("user")) if params.get("action") == "approve" else None
        except OAuth2Error as error:
            return self._authorize_error(request, error)
        except DevIdpError as exc:
            return HttpResponse.html(400, pages.error_page("Log in", str(exc)))
        return self._authorize(request, grant, user.name if user else None)

    def _authorize(self, request: HttpRequest, grant: Any, user_name: str | None) -> HttpResponse:
        user = self.idp.user(user_name) if user_name else None
        log("devidp.authorize", client_id=grant.client.get_client_id(), approved=user is not None, user=user_name)
        response: HttpResponse = self.server.create_authorization_response(request, grant_user=user, grant=grant)
        return response

    def _authorize_error(self, request: HttpRequest, error: OAuth2Error) -> HttpResponse:
        if error.redirect_uri:  # the client and its redirect URI are known: the error goes back to the client
            response: HttpResponse = self.server.handle_error_response(request, error)
            return response
        message = f"{error.error}: {error.description}" if error.description else str(error.error)
        return HttpResponse.html(error.status_code or 400, pages.error_page("Log in", message))

    # UserInfo (OpenID Connect Core §5.3)

    def userinfo(self, request: HttpRequest) -> HttpResponse:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return _error_json(401, "invalid_token", "send the access token as: Authorization: Bearer TOKEN")
        try:
            decoded = jwt.decode(token.strip(), self.idp.key.key_set, algorithms=[ALGORITHM])
            jwt.JWTClaimsRegistry(iss={"essential": True, "value": self.issuer}).validate(decoded.claims)
        except (JoseError, ValueError) as exc:
            return _error_json(401, "invalid_token", f"the access token does not verify: {exc}")
        user = self.idp.users.get(str(decoded.claims.get("sub")))
        if user is None or decoded.header.get("typ") != "at+jwt":
            return _error_json(401, "invalid_token", "not an access token for a user")
        return HttpResponse.json(200, user.claims())


def _error_json(status: int, error: str, description: str) -> HttpResponse:
    return HttpResponse.json(status, {"error": error, "error_description": description})
