"""Logins over SSH: the bastion's reserved user names turn an OIDC login into a verified identity.

* `token`: keyboard-interactive asks for one answer, an ID token or a JWT access token. Once it
  verifies, `ssh token@bastion certificate < key.pub` prints a certificate for that key. This is
  what `bastion login` speaks after it has run the OIDC flow on the user's machine.
* `login` (or `login+ISSUER`): keyboard-interactive shows a device-flow link and code, the
  bastion polls the identity provider, and the session prints a certificate for the public key the
  client offered during authentication, with the two commands that save it. Nothing but `ssh`.

Neither user can open channels to hosts: these connections only issue certificates
(issuance_session.py prints them).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import asyncssh
from asyncssh.public_key import decode_ssh_certificate, decode_ssh_public_key

from bastion.identity.config import IssuerSettings
from bastion.identity.oauth import (
    DeviceAuthorization,
    LoginFailed,
    poll_device_token,
    start_device_authorization,
)
from bastion.identity.oidc import TokenRejected, VerifiedToken
from bastion.ssh.context import BastionContext

TOKEN_USER = "token"
LOGIN_USER = "login"
ISSUE_COMMAND = "certificate"
MAX_KEY_BYTES = 16 * 1024
# Logins run HTTP calls to the identity provider in a pool of their own, so that unauthenticated
# connections can never occupy the threads revocation, approvals and issuance use; and at most
# MAX_DEVICE_LOGINS device flows wait for people at once.
MAX_DEVICE_LOGINS = 16
DEVICE_LOGINS = threading.BoundedSemaphore(MAX_DEVICE_LOGINS)
LOGIN_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=MAX_DEVICE_LOGINS + 4, thread_name_prefix="login")
T = TypeVar("T")


async def _in_login_pool(func: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(LOGIN_POOL, func, *args)


def is_issuance_user(username: str) -> bool:
    return username in (TOKEN_USER, LOGIN_USER) or username.startswith(LOGIN_USER + "+")


def refuse_if_revoked(ctx: BastionContext, verified: VerifiedToken) -> None:
    """A token issued before `cert revoke --user`, or less than the issuer's `leeway` after it (the
    provider's clock may be ahead of ours), gets nothing."""
    revoked_at, skew = ctx.store.user_revoked_at(verified.username), verified.issuer.leeway
    if revoked_at is not None and float(verified.claims["iat"]) - skew <= revoked_at:
        raise LoginFailed(
            f"{verified.username} was revoked after this token was issued (or within {skew:.0f} s before it); "
            "log in to the provider again"
        )


class LoginFlow:
    """The keyboard-interactive half: a token pasted, or a device flow the bastion runs."""

    def __init__(self, ctx: BastionContext, connection_id: str, source: str, username: str) -> None:
        self.ctx = ctx
        self.connection_id = connection_id
        self.source = source
        self.username = username
        self.device_flow = username != TOKEN_USER
        self.offered: list[asyncssh.SSHKey] = []  # public keys the client offered, in order
        self.verified: VerifiedToken | None = None
        self.cancelled = threading.Event()
        self.failed = False
        self._device: DeviceAuthorization | None = None
        self._started = False
        self._holds_slot = False  # a DEVICE_LOGINS slot, released when the connection ends
        self._issuer: IssuerSettings | None = None

    def offer(self, key_data: bytes) -> None:
        try:
            key = decode_ssh_public_key(key_data)
        except asyncssh.KeyImportError:
            try:
                key = decode_ssh_certificate(key_data).key
            except (asyncssh.KeyImportError, ValueError):
                return
        if all(k.public_data != key.public_data for k in self.offered):
            self.offered.append(key)

    async def challenge(self, conn: Any) -> tuple[str, str, str, tuple[tuple[str, bool], ...]] | bool:
        if self.failed or self.verified is not None:
            return False
        if self._device is not None or self._started:
            return self._fail(conn, "one login per connection; connect again")
        self._started = True
        if self.device_flow and not DEVICE_LOGINS.acquire(blocking=False):
            return self._fail(conn, "too many logins in progress; try again in a minute")
        self._holds_slot = self.device_flow
        if not self.device_flow:
            return ("bastion", "Send an OIDC ID token or JWT access token.", "", (("token: ", False),))
        try:
            self._issuer = self._device_issuer()
            discovery = await _in_login_pool(self.ctx.verifier.keys(self._issuer).discovery)
            self._device = await _in_login_pool(
                start_device_authorization, discovery, self._issuer.client_id, self._issuer.scopes
            )
        except (LoginFailed, TokenRejected) as exc:
            return self._fail(conn, str(exc))
        conn.extend_login_grace(self._device.expires_in + 30)
        device = self._device
        instructions = (
            f"To log in, open\n\n    {device.link}\n\nand confirm the code  {device.user_code}\n\n"
            f"(the code expires in {int(device.expires_in // 60)} min)"
        )
        return ("bastion login", instructions, "", (("Press Enter after you have approved the login: ", True),))

    async def respond(self, conn: Any, responses: tuple[str, ...]) -> bool:
        try:
            if self.device_flow:
                token = await self._wait_for_device_login()
            else:
                token = responses[0] if responses else ""
            verified = await _in_login_pool(self.ctx.verifier.verify, token)
            refuse_if_revoked(self.ctx, verified)
            self.verified = verified
        except (LoginFailed, TokenRejected) as exc:
            return self._fail(conn, str(exc))
        return True

    async def _wait_for_device_login(self) -> str:
        assert self._issuer is not None and self._device is not None
        issuer, device = self._issuer, self._device
        discovery = await _in_login_pool(self.ctx.verifier.keys(issuer).discovery)
        tokens = await _in_login_pool(
            functools.partial(poll_device_token, cancelled=self.cancelled), discovery, issuer.client_id, device
        )
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise LoginFailed("the identity provider returned no ID token; is 'openid' among the issuer's scopes?")
        return id_token

    def end(self) -> None:
        """The connection ended: stop polling, free the device-login slot."""
        self.cancelled.set()
        if self._holds_slot:
            self._holds_slot = False
            DEVICE_LOGINS.release()

    def _device_issuer(self) -> IssuerSettings:
        identity = self.ctx.settings.identity
        name = self.username.partition("+")[2]
        issuer = identity.issuer(name) if name else identity.default_human()
        if issuer is None or issuer.kind != "human":
            known = ", ".join(i.name for i in identity.issuers if i.kind == "human") or "none configured"
            raise LoginFailed(
                f"no human identity issuer {name!r} (issuers: {known})" if name else f"no issuer: {known}"
            )
        return issuer

    def _fail(self, conn: Any, reason: str) -> bool:
        self.failed = True
        conn.send_auth_banner(f"bastion: login failed: {reason}\r\n")
        self.ctx.audit(
            "login.failed", connection=self.connection_id, source=self.source, user=self.username, reason=reason
        )
        return False

    def audit_ok(self) -> None:
        v = self.verified
        assert v is not None
        self.ctx.audit(
            "login.ok",
            connection=self.connection_id,
            source=self.source,
            user=v.username,
            groups=list(v.groups),
            issuer=v.issuer.name,
            subject=v.subject,
            token_type=v.token_type,
            method="device" if self.device_flow else "token",
        )
