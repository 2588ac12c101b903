"""The development IdP's state: users, clients, key, settings, and the grants in flight (in memory)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from authlib.oauth2.rfc8628 import DeviceCredentialMixin
from authlib.oidc.core import AuthorizationCodeMixin

from bastion.demo.devidp.directory import Client, DevIdpError, User, default_clients, default_users
from bastion.demo.devidp.keys import SigningKey
from bastion.logs import log

T = TypeVar("T")
EXPIRED_KEPT = 3600  # seconds an expired device code still answers expired_token
SLOW_DOWN_STEP = 5  # RFC 8628 §3.5: each slow_down adds 5 seconds to the interval


@dataclass
class DeviceAuthorization(DeviceCredentialMixin):
    """One device authorization request (RFC 8628), pending until a user approves or denies it."""

    device_code: str
    user_code: str
    client_id: str
    scope: str
    expires_at: float
    interval: int
    last_poll: float | None = None
    user: User | None = None
    approved: bool | None = None
    decided_at: int | None = None

    def get_client_id(self) -> str:
        return self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_user_code(self) -> str:
        return self.user_code

    def is_expired(self) -> bool:
        return time.time() >= self.expires_at


@dataclass(frozen=True)
class AuthorizationCode(AuthorizationCodeMixin):
    """An authorization code bound to its client, redirect URI, user, nonce and PKCE challenge."""

    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: User
    auth_time: int
    expires_at: float
    code_challenge: str
    code_challenge_method: str
    nonce: str | None = None

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time


class DevIdp:
    """A development OpenID provider: who may log in, as whom, and what is pending. Thread-safe.

    Nobody authenticates here: whoever reaches the pages picks a user. Serve it with `serve_dev_idp`.
    """

    def __init__(
        self,
        users: Iterable[User] | None = None,
        clients: Iterable[Client] | None = None,
        auto_approve: str | None = None,
        *,
        key: SigningKey | None = None,
        audience: str = "bastion",
        token_ttl: int = 3600,
        code_ttl: int = 300,
        device_expires_in: int = 600,
        device_interval: int = 5,
    ) -> None:
        self.users = _by_name((u.name, u) for u in (default_users() if users is None else users))
        self.clients = _by_name((c.client_id, c) for c in (default_clients() if clients is None else clients))
        if not self.users:
            raise DevIdpError("no users; give at least one, e.g. --user alice:dev")
        if auto_approve is not None and auto_approve not in self.users:
            raise DevIdpError(f"--auto-approve {auto_approve}: no such user; users are {', '.join(self.users)}")
        self.auto_approve = auto_approve
        self.key = key or SigningKey.generate()
        self.audience = audience
        self.token_ttl = int(token_ttl)
        self.code_ttl = int(code_ttl)
        self.device_expires_in = int(device_expires_in)
        self.device_interval = int(device_interval)
        self._lock = threading.RLock()  # decide_device checks and sets under one hold
        self._devices: dict[str, DeviceAuthorization] = {}
        self._codes: dict[str, AuthorizationCode] = {}
        self._nonces: set[tuple[str, str]] = set()

    # Device authorization (RFC 8628)

    def start_device(self, client_id: str, scope: str, device_code: str, user_code: str) -> DeviceAuthorization:
        device = DeviceAuthorization(
            device_code,
            user_code,
            client_id,
            scope,
            expires_at=time.time() + self.device_expires_in,
            interval=self.device_interval,
        )
        with self._lock:
            self._purge()
            self._devices[device_code] = device
        log("devidp.device_authorization", client_id=client_id, user_code=user_code, scope=scope)
        if self.auto_approve:
            self.decide_device(user_code, self.auto_approve, approve=True)
        return device

    def device(self, device_code: str) -> DeviceAuthorization | None:
        with self._lock:
            return self._devices.get(device_code)

    def device_by_user_code(self, user_code: str) -> DeviceAuthorization | None:
        wanted = normalize_user_code(user_code)
        with self._lock:
            return next((d for d in self._devices.values() if d.user_code == wanted), None)

    def pending_device(self, user_code: str) -> DeviceAuthorization:
        """The device authorization a person may still decide, or a DevIdpError saying why not."""
        device = self.device_by_user_code(user_code)
        if device is None:
            raise DevIdpError(f"unknown code {user_code!r}; check the code your terminal shows")
        if device.is_expired():
            raise DevIdpError(f"code {device.user_code} has expired; start the login again")
        if device.approved is not None:
            raise DevIdpError(f"code {device.user_code} was already {'approved' if device.approved else 'denied'}")
        return device

    def decide_device(self, user_code: str, user_name: str | None, approve: bool) -> DeviceAuthorization:
        """Approve (as `user_name`) or deny a pending device authorization."""
        user = self.user(user_name) if approve else None
        with self._lock:
            device = self.pending_device(user_code)
            device.user, device.approved, device.decided_at = user, approve, int(time.time())
        log("devidp.device_decision", user_code=device.user_code, approved=approve, user=user_name if approve else None)
        return device

    def device_grant(self, user_code: str) -> tuple[User | None, bool] | None:
        """authlib's `query_user_grant`: (user, approved) once decided, else None."""
        device = self.device_by_user_code(user_code)
        if device is None or device.approved is None:
            return None
        return device.user, device.approved

    def poll_too_fast(self, device: DeviceAuthorization) -> bool:
        """A poll sooner than the interval: slow_down, and the interval grows for the rest of the flow."""
        now = time.monotonic()
        with self._lock:
            too_fast = device.last_poll is not None and now - device.last_poll < device.interval
            if too_fast:
                device.interval += SLOW_DOWN_STEP
            device.last_poll = now
        return too_fast

    def finish_device(self, device_code: str) -> None:
        with self._lock:
            self._devices.pop(device_code, None)

    # Authorization codes (RFC 6749 §4.1, RFC 7636)

    def save_code(self, code: AuthorizationCode) -> None:
        with self._lock:
            self._purge()
            self._codes[code.code] = code
            if code.nonce:
                self._nonces.add((code.client_id, code.nonce))

    def code(self, code: str, client_id: str) -> AuthorizationCode | None:
        with self._lock:
            found = self._codes.get(code)
        if found is None or found.client_id != client_id or time.time() >= found.expires_at:
            return None
        return found

    def delete_code(self, code: str) -> None:
        with self._lock:
            self._codes.pop(code, None)

    def nonce_used(self, client_id: str, nonce: str) -> bool:
        with self._lock:
            return (client_id, nonce) in self._nonces

    def _purge(self) -> None:
        """Forget what has long expired; an expired device code is kept a while to answer expired_token."""
        now = time.time()
        for device_code in [d.device_code for d in self._devices.values() if now > d.expires_at + EXPIRED_KEPT]:
            del self._devices[device_code]
        for code in [c.code for c in self._codes.values() if now > c.expires_at]:
            del self._codes[code]

    # Users

    def user(self, name: str | None) -> User:
        if not name or name not in self.users:
            raise DevIdpError(f"unknown user {name!r}; users are {', '.join(self.users)}")
        return self.users[name]


def normalize_user_code(text: str) -> str:
    """'bcdf ghjk', 'BCDFGHJK' and 'bcdf-ghjk' are the same code (RFC 8628 §6.1: forgiving input)."""
    letters = re.sub(r"[^A-Za-z0-9]", "", text).upper()
    return f"{letters[:4]}-{letters[4:]}" if len(letters) == 8 else letters


def _by_name(items: Iterable[tuple[str, T]]) -> dict[str, T]:
    found: dict[str, T] = {}
    for name, item in items:
        if name in found:
            raise DevIdpError(f"{name!r} is declared twice")
        found[name] = item
    return found
