"""OAuth 2.0 client flows against an OIDC provider: device authorization (RFC 8628), authorization
code with PKCE on a loopback redirect (RFC 7636, RFC 8252), and client credentials.

Used by `bastion login` on the user's machine and by the bastion itself for `ssh login@bastion`.
Every failure is a LoginFailed with one line for the user. HTTP goes through urllib; waiting and
the clock are injectable so that the polling rules are tested without sleeping.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
SLOW_DOWN_STEP = 5.0  # RFC 8628 §3.5: add 5 seconds to the interval on slow_down


class LoginFailed(Exception):
    """An interactive or workload login that did not produce a token; one line for the user."""


@dataclass(frozen=True)
class DeviceAuthorization:
    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: float
    interval: float

    @property
    def link(self) -> str:
        return self.verification_uri_complete or self.verification_uri


def post_form(url: str, form: dict[str, str], basic_auth: tuple[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """POST a form, return (status, JSON body). Error statuses are returned, not raised."""
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    if basic_auth is not None:
        pair = f"{urllib.parse.quote(basic_auth[0])}:{urllib.parse.quote(basic_auth[1])}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    request = urllib.request.Request(url, urllib.parse.urlencode(form).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, body = response.status, response.read(1024 * 1024)
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read(1024 * 1024)
    except (urllib.error.URLError, OSError) as exc:
        raise LoginFailed(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from None
    try:
        document = json.loads(body or b"{}")
    except ValueError:
        raise LoginFailed(f"{url} answered HTTP {status} with a body that is not JSON") from None
    return status, document if isinstance(document, dict) else {}


def _endpoint(discovery: dict[str, Any], name: str) -> str:
    url = discovery.get(name)
    if not isinstance(url, str):
        raise LoginFailed(f"the identity provider does not offer {name.replace('_', ' ')}")
    return url


def start_device_authorization(
    discovery: dict[str, Any], client_id: str, scopes: tuple[str, ...]
) -> DeviceAuthorization:
    url = _endpoint(discovery, "device_authorization_endpoint")
    status, body = post_form(url, {"client_id": client_id, "scope": " ".join(scopes)})
    if status != 200 or not isinstance(body.get("device_code"), str) or not isinstance(body.get("user_code"), str):
        raise LoginFailed(f"device authorization refused: {_error_text(body, status)}")
    return DeviceAuthorization(
        device_code=body["device_code"],
        user_code=body["user_code"],
        verification_uri=str(body.get("verification_uri") or body.get("verification_url") or ""),
        verification_uri_complete=body.get("verification_uri_complete"),
        expires_in=bounded_seconds(body.get("expires_in"), 600, 30, 3600),
        interval=bounded_seconds(body.get("interval"), 5, 1, 60),
    )


def bounded_seconds(value: Any, default: float, low: float, high: float) -> float:
    """A number of seconds from the provider, within sane bounds (a bad value must not crash the poll)."""
    try:
        number = float(value) if value is not None else default
    except (TypeError, ValueError):
        number = default
    return min(max(number, low), high) if number == number else default


def poll_device_token(
    discovery: dict[str, Any],
    client_id: str,
    device: DeviceAuthorization,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    cancelled: threading.Event | None = None,
    post: Callable[[str, dict[str, str]], tuple[int, dict[str, Any]]] = post_form,
) -> dict[str, Any]:
    """Poll the token endpoint until the user approves (RFC 8628 §3.4-3.5)."""
    url = _endpoint(discovery, "token_endpoint")
    form = {"grant_type": DEVICE_GRANT, "device_code": device.device_code, "client_id": client_id}
    interval, deadline = device.interval, clock() + device.expires_in
    while True:
        sleep(interval)
        if cancelled is not None and cancelled.is_set():
            raise LoginFailed("login cancelled")
        status, body = post(url, form)
        if status == 200 and body.get("access_token"):
            return body
        error = body.get("error")
        if error == "authorization_pending":
            pass
        elif error == "slow_down":
            interval += SLOW_DOWN_STEP
        elif error == "expired_token":
            raise LoginFailed("the login code expired before it was approved; log in again")
        elif error == "access_denied":
            raise LoginFailed("the login was denied at the identity provider")
        else:
            raise LoginFailed(f"identity provider refused the token request: {_error_text(body, status)}")
        if clock() >= deadline:
            raise LoginFailed("the login code expired before it was approved; log in again")


def client_credentials(
    discovery: dict[str, Any], client_id: str, secret: str, scopes: tuple[str, ...] = (), resource: str | None = None
) -> dict[str, Any]:
    url = _endpoint(discovery, "token_endpoint")
    form = {"grant_type": "client_credentials"}
    if scopes:
        form["scope"] = " ".join(scopes)
    if resource:
        form["resource"] = resource
    status, body = post_form(url, form, basic_auth=(client_id, secret))
    if status != 200 or not body.get("access_token"):
        raise LoginFailed(f"client credentials refused: {_error_text(body, status)}")
    return body


@dataclass(frozen=True)
class BrowserLogin:
    url: str  # where the user's browser must go
    nonce: str
    _wait: Callable[[float], dict[str, Any]]

    def wait(self, timeout: float = 300.0) -> dict[str, Any]:
        return self._wait(timeout)


def start_browser_login(discovery: dict[str, Any], client_id: str, scopes: tuple[str, ...]) -> BrowserLogin:
    """Authorization code with PKCE (S256) on a loopback redirect; `wait()` returns the tokens."""
    authorize = _endpoint(discovery, "authorization_endpoint")
    token_url = _endpoint(discovery, "token_endpoint")
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    received: dict[str, str] = {}
    done = threading.Event()

    class Callback(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
            if query.get("state") != state:
                self.send_error(400, "unexpected state")
                return
            received.update(query)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.end_headers()
            self.wfile.write(b"Login received; you can close this window and return to the terminal.\n")
            done.set()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Callback)
    redirect_uri = f"http://127.0.0.1:{server.server_port}/callback"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": " ".join(scopes),
        "state": state,
        "nonce": nonce,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }

    def wait(timeout: float) -> dict[str, Any]:
        try:
            if not done.wait(timeout):
                raise LoginFailed("no login arrived on the loopback redirect in time; log in again")
        finally:
            server.shutdown()
            server.server_close()
        if "error" in received:
            raise LoginFailed(f"the identity provider refused the login: {_error_text(received, 400)}")
        form = {
            "grant_type": "authorization_code",
            "code": received.get("code", ""),
            "redirect_uri": redirect_uri,
            "client_id": client_id,
            "code_verifier": verifier,
        }
        status, body = post_form(token_url, form)
        if status != 200 or not body.get("access_token"):
            raise LoginFailed(f"code exchange refused: {_error_text(body, status)}")
        return body

    return BrowserLogin(f"{authorize}?{urllib.parse.urlencode(query)}", nonce, wait)


def _error_text(body: dict[str, Any], status: int) -> str:
    error = str(body.get("error") or f"HTTP {status}")
    description = body.get("error_description")
    text = f"{error}: {description}" if description else error
    return "".join(c for c in text if c.isprintable())[:200]
