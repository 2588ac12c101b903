"""Issuance over SSH: the bastion's reserved user names turn an OIDC login into a certificate.

* `token`: keyboard-interactive asks for one answer, an ID token or a JWT access token. Once it
  verifies, `ssh token@bastion certificate < key.pub` prints a certificate for that key. This is
  what `bastion login` speaks after it has run the OIDC flow on the user's machine.
* `login` (or `login+ISSUER`): keyboard-interactive shows a device-flow link and code, the
  bastion polls the identity provider, and the session prints a certificate for the public key the
  client offered during authentication, with the two commands that save it. Nothing but `ssh`.

Neither user can open channels to hosts: these connections only issue certificates.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import asyncssh
from asyncssh.public_key import decode_ssh_certificate, decode_ssh_public_key

from bastion.identity.issuance import IssuanceError, issue_certificate
from bastion.identity.issuers import IssuerSettings
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


def _refuse_if_revoked(ctx: BastionContext, verified: VerifiedToken) -> None:
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
            _refuse_if_revoked(self.ctx, verified)
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


class IssuanceSession(asyncssh.SSHServerSession[bytes]):
    """The session of a `token` or `login` connection: hand out one certificate, then exit."""

    def __init__(self, ctx: BastionContext, flow: LoginFlow) -> None:
        self.ctx = ctx
        self.flow = flow
        self.chan: asyncssh.SSHServerChannel[bytes] | None = None
        self.command = ""
        self.stdin = bytearray()
        self.pty = False
        self.task: asyncio.Future[None] | None = None
        self.record: dict[str, Any] = {}

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:  # type: ignore[override]
        self.chan = chan

    def pty_requested(self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Any) -> bool:
        self.pty = True
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        self.command = command.strip()
        return True

    def session_started(self) -> None:
        if self.flow.device_flow:
            self.task = asyncio.ensure_future(self._issue_for_offered_key())
        elif self.command not in (ISSUE_COMMAND, ISSUE_COMMAND + " --json"):
            self._finish(2, f"bastion: usage: ssh {TOKEN_USER}@bastion {ISSUE_COMMAND} < ~/.ssh/id_ed25519.pub")

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.stdin += data
        if len(self.stdin) > MAX_KEY_BYTES:
            self._finish(1, "bastion: a public key is at most 16 KiB")

    def eof_received(self) -> bool:
        if not self.flow.device_flow and self.command in (ISSUE_COMMAND, ISSUE_COMMAND + " --json"):
            self.task = asyncio.ensure_future(self._issue_for_stdin_key())
        return True

    async def _issue_for_stdin_key(self) -> None:
        try:
            key = asyncssh.import_public_key(bytes(self.stdin).strip())
        except (asyncssh.KeyImportError, ValueError) as exc:
            self._finish(1, f"bastion: stdin is not an OpenSSH public key: {exc}")
            return
        certificate = await self._issue(key)
        if certificate is not None:
            self._write(self._json(certificate) if self.command.endswith("--json") else certificate)
            self._finish(0)

    async def _issue_for_offered_key(self) -> None:
        if not self.flow.offered:
            self._finish(1, "bastion: your ssh client offered no public key; create one with: ssh-keygen -t ed25519")
            return
        key = self.flow.offered[0]
        certificate = await self._issue(key)
        if certificate is not None:
            self._write(self._instructions(key, certificate).encode())
            self._finish(0)

    async def _issue(self, key: asyncssh.SSHKey) -> bytes | None:
        verified = self.flow.verified
        assert verified is not None
        problem = _key_problem(key)
        if problem:
            self._finish(1, f"bastion: {problem}")
            return None
        try:  # again: the connection may have stayed open since the token was checked
            _refuse_if_revoked(self.ctx, verified)
            if verified.expires_at <= time.time():
                raise LoginFailed("the token has expired since this connection logged in; log in again")
        except LoginFailed as exc:
            self._finish(1, f"bastion: login failed: {exc}")
            return None
        human = verified.issuer.kind == "human"
        ttl = self.ctx.settings.certificates.user_ttl if human else self.ctx.settings.certificates.workload_ttl
        try:
            self.record, certificate = await asyncio.to_thread(
                issue_certificate,
                self.ctx.settings,
                self.ctx.store,
                self.ctx.authorities,
                verified.username,
                verified.groups,
                ttl,
                key,
                None,
                source=self.flow.source,
                issuer=f"oidc:{verified.issuer.name}",
                subject=verified.subject,
                token_type=verified.token_type,
                connection=self.flow.connection_id,
            )
        except IssuanceError as exc:
            self._finish(1, f"bastion: {exc}")
            return None
        return certificate

    def _json(self, certificate: bytes) -> bytes:
        """What `bastion login` needs to write the client's files: the certificate and how to reach hosts."""
        verified = self.flow.verified
        assert verified is not None
        document = {
            "certificate": certificate.decode().strip(),
            "user": verified.username,
            "groups": list(verified.groups),
            "issuer": verified.issuer.name,
            "serial": self.record["serial"],
            "valid_before": self.record["valid_before"],
            "hosts": [{"name": h.name, "logins": list(h.logins)} for h in self.ctx.settings.hosts],
            "names": list(self.ctx.settings.server.names),
            "known_hosts": self.ctx.authorities.known_hosts_line(_trusted_names(self.ctx)),
        }
        return json.dumps(document).encode() + b"\n"

    def _instructions(self, key: asyncssh.SSHKey, certificate: bytes) -> str:
        verified = self.flow.verified
        assert verified is not None
        record = self.record
        until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(record["valid_before"]))
        stem = {"ssh-ed25519": "id_ed25519", "ssh-rsa": "id_rsa"}.get(key.get_algorithm(), "id_ecdsa")
        known_hosts = self.ctx.authorities.known_hosts_line(_trusted_names(self.ctx))
        groups = ", ".join(verified.groups) or "none"
        first = self.ctx.settings.hosts[0] if self.ctx.settings.hosts else None
        example = f"{first.logins[0]}@{first.name}" if first else "LOGIN@HOST"
        jump = f"{verified.username}@{bastion_address(self.ctx)}"
        lines = [
            f"bastion: logged in as {verified.username} (groups: {groups}) through {verified.issuer.name}",
            f"bastion: certificate serial {record['serial']} for your {key.get_algorithm()} key "
            f"{key.get_fingerprint()}, valid until {until}",
            "",
            "Save it beside your key, and trust the bastion's host certificates:",
            "",
            f"  echo '{certificate.decode().strip()}' > ~/.ssh/{stem}-cert.pub",
            f"  echo '{known_hosts}' >> ~/.ssh/known_hosts",
            "",
            f"Then: ssh -J {jump} {example}",
            "",
        ]
        return "\r\n".join(lines) if self.pty else "\n".join(lines)

    def _write(self, data: bytes) -> None:
        if self.chan is not None and not self.chan.is_closing():
            self.chan.write(data)

    def _finish(self, status: int, message: str = "") -> None:
        if self.chan is None or self.chan.is_closing():
            return
        if message:
            self.chan.write_stderr((message + ("\r\n" if self.pty else "\n")).encode())
        self.chan.exit(status)


def _key_problem(key: asyncssh.SSHKey) -> str | None:
    algorithm = key.get_algorithm()
    if algorithm.startswith("ssh-rsa") and getattr(key.pyca_key, "key_size", 0) < 2048:
        return "RSA keys shorter than 2048 bits are not certified; use ssh-keygen -t ed25519"
    if algorithm == "ssh-dss":
        return "DSA keys are not certified; use ssh-keygen -t ed25519"
    return None


def _trusted_names(ctx: BastionContext) -> str:
    """known_hosts patterns for the bastion (by every name, with its port) and the hosts behind it."""
    port = ctx.settings.server.listen[1]
    names = [name if port == 22 else f"[{name}]:{port}" for name in ctx.settings.server.names]
    return ",".join(dict.fromkeys([*names, *(h.name for h in ctx.settings.hosts)]))


def bastion_address(ctx: BastionContext) -> str:
    """How a client names the bastion: its loopback listen address in a demo, else its first name."""
    host, port = ctx.settings.server.listen
    name = host if host.startswith("127.") or host == "::1" else ctx.settings.server.names[0]
    return name if port == 22 else f"{name}:{port}"
