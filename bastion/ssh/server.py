"""The outer SSH server: user-certificate authentication and routing of channels.

Only certificates signed by the user CA, issued and recorded by this bastion and not revoked, are
accepted: no passwords, no plain keys. A direct-tcpip channel is accepted only to an inventory
host's name and SSH port, where it gets an inner server; everything else is refused and logged,
so the bastion is never an open relay.
"""

from __future__ import annotations

import asyncio
import shlex
import time
from collections.abc import Callable
from typing import Any

import asyncssh

from bastion.config import Settings
from bastion.control.actions import Connect, Subject
from bastion.control.approver_commands import approvals_command
from bastion.control.gate import Gate, denial
from bastion.identity.ca import CertificateRejected, Identity
from bastion.identity.certinfo import CertificateFormatError, is_certificate, parse_certificate
from bastion.logs import log
from bastion.ssh.context import BastionContext, new_connection_id, server_options
from bastion.ssh.inner import inner_connection, refuse_listener
from bastion.ssh.issuance_session import IssuanceSession
from bastion.ssh.limits import ChannelCount, once
from bastion.ssh.login_flow import LoginFlow, is_issuance_user

APPROVER_COMMANDS = ("approvals", "approve", "deny")


class OuterConnection(asyncssh.SSHServerConnection):
    """Binds the identity of the certificate that completed authentication to the connection."""

    identity: Identity | None = None
    ctx: BastionContext

    async def validate_public_key(self, username: str, key_data: bytes, msg: bytes, signature: bytes) -> bool:
        owner: OuterServer = self._owner  # type: ignore[assignment]
        if owner.login_flow is not None:  # `ssh login@bastion`: note the key to certify, never accept it
            owner.login_flow.offer(key_data)
            return False
        if not is_certificate(key_data):
            owner.auth_failure(username, "plain keys are not accepted; log in to get a certificate", final=bool(msg))
            return False
        try:
            info = parse_certificate(key_data)
            self.ctx.authorities.check_user_certificate(info, username, time.time())
            record = self.ctx.store.certificate(info.serial)
            if record is None:
                raise CertificateRejected(f"certificate serial {info.serial} was not issued by this bastion")
            if record["revoked_at"] is not None:
                raise CertificateRejected(f"certificate serial {info.serial} has been revoked")
        except (CertificateRejected, CertificateFormatError) as exc:
            owner.auth_failure(username, str(exc), final=bool(msg))
            return False
        if not await super().validate_public_key(username, key_data, msg, signature):
            owner.auth_failure(username, "certificate signature or validity check failed", final=bool(msg))
            return False
        if msg:  # the signature was checked: this key now authenticates the connection
            workload = is_workload(self.ctx.settings, str(record.get("issuer") or ""))
            self.identity = Identity(username, tuple(record["groups"]), info.serial, info.key_id, workload)
        return True

    # Password and keyboard-interactive are never offered (kbdint only to the issuance users). A client may
    # still try them; asyncssh asks the methods' `*_supported()` both when it lists the methods in a failure
    # and when a client attempts one, so an ask outside a listing is an attempt: refused, and on record.
    _listing_methods = False

    def send_userauth_failure(self, partial_success: bool) -> None:
        self._listing_methods = True
        try:
            super().send_userauth_failure(partial_success)
        finally:
            self._listing_methods = False

    def password_auth_supported(self) -> bool:
        if not self._listing_methods:
            self._unoffered("password")
        return False

    def kbdint_auth_supported(self) -> bool:
        offered = super().kbdint_auth_supported()
        if not offered and not self._listing_methods:
            self._unoffered("keyboard-interactive")
        return offered

    def _unoffered(self, method: str) -> None:
        owner: OuterServer = self._owner  # type: ignore[assignment]
        reason = f"{method} authentication is not offered: log in with a certificate"
        owner.auth_failure(self._username, reason, final=False)
        if method not in owner.unoffered_tried:  # on record even if the connection then logs in; once per method
            owner.unoffered_tried.add(method)
            self.ctx.audit("auth.refused", connection=owner.id, source=owner.source, user=self._username,
                           method=method, reason=reason)  # fmt: skip

    def extend_login_grace(self, seconds: float) -> None:
        """A device-flow login waits for a person: give this connection (only) that long to authenticate."""
        if self._login_timer is not None:
            self._login_timer.cancel()
            self._login_timer = self._loop.call_later(seconds, self._login_timer_callback)


def is_workload(settings: Settings, issuer: str) -> bool:
    """Whether a certificate's issuance record names a workload issuer (`oidc:NAME`); certificates the
    operator issues (`bastion cert issue`) are people's. An issuer no longer configured counts as a workload."""
    if not issuer.startswith("oidc:"):
        return False
    name = issuer.removeprefix("oidc:")
    configured = next((i for i in settings.identity.issuers if i.name == name), None)
    return configured is None or configured.kind == "workload"


class OuterServer(asyncssh.SSHServer):
    def __init__(self, ctx: BastionContext) -> None:
        self.ctx = ctx
        self.conn: OuterConnection | None = None
        self.id = new_connection_id()
        self.source = ""
        self.refused_user = ""
        self.refusals: list[str] = []  # why each offered key was refused, logged once at the end
        self.login_flow: LoginFlow | None = None  # the reserved users `token` and `login`
        self.channels = ChannelCount(ctx.settings.server.max_channels_per_connection)
        self.unoffered_tried: set[str] = set()  # password, keyboard-interactive: tried although not offered

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn  # type: ignore[assignment]
        peer = conn.get_extra_info("peername") or ("?", 0)
        self.source = f"{peer[0]}:{peer[1]}"
        self.ctx.live.add(self)
        log("connection", connection=self.id, source=self.source)

    def connection_lost(self, exc: Exception | None) -> None:
        self.ctx.live.discard(self)
        if self.login_flow is not None:
            self.login_flow.end()
        if self.refusals and (self.conn is None or self.conn.identity is None):
            self.ctx.audit(
                "auth.failed",
                connection=self.id,
                source=self.source,
                user=self.refused_user,
                reason=self.refusals[-1],
                reasons=self.refusals,
            )
        log("connection.closed", connection=self.id, source=self.source, reason=str(exc) if exc else "closed")

    def begin_auth(self, username: str) -> bool:
        if is_issuance_user(username) and self.login_flow is None:
            self.login_flow = LoginFlow(self.ctx, self.id, self.source, username)
        elif not is_issuance_user(username):
            self.login_flow = None
        return True

    def public_key_auth_supported(self) -> bool:
        return self.login_flow is None or self.login_flow.device_flow

    def kbdint_auth_supported(self) -> bool:
        return self.login_flow is not None and not self.login_flow.failed

    async def get_kbdint_challenge(self, username: str, lang: str, submethods: str) -> Any:
        assert self.login_flow is not None
        return await self.login_flow.challenge(self.conn)

    async def validate_kbdint_response(self, username: str, responses: Any) -> bool:
        assert self.login_flow is not None
        return await self.login_flow.respond(self.conn, tuple(responses))

    def validate_ca_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return key.public_data == self.ctx.authorities.user_ca.public_data

    def auth_failure(self, username: str, reason: str, final: bool) -> None:
        log("auth.rejected", connection=self.id, source=self.source, user=username, reason=reason)
        self.refused_user = username
        if reason not in self.refusals:
            self.refusals.append(reason)

    def auth_completed(self) -> None:
        if self.login_flow is not None:
            self.login_flow.audit_ok()
            return
        identity = self.identity
        self.ctx.audit(
            "auth.ok",
            connection=self.id,
            source=self.source,
            user=identity.user,
            groups=list(identity.groups),
            serial=identity.serial,
            key_id=identity.key_id,
        )

    @property
    def identity(self) -> Identity:
        assert self.conn is not None and self.conn.identity is not None
        return self.conn.identity

    @property
    def user(self) -> str:
        """Who is on this connection, for events: the certificate's user or the login being issued."""
        if self.login_flow is not None:
            return self.login_flow.verified.username if self.login_flow.verified else self.login_flow.username
        return self.identity.user

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int) -> Any:
        host = self.ctx.settings.host(dest_host)
        destination = f"{dest_host}:{dest_port}"
        if self.login_flow is not None or host is None or dest_port != host.port:
            reason = (
                f"{destination} is not a host in this bastion's inventory"
                if self.login_flow is None
                else "a login connection only issues certificates; connect again with the certificate"
            )
            self.ctx.audit(
                "channel.refused",
                connection=self.id,
                user=self.user,
                source=self.source,
                destination=destination,
                reason=reason,
            )
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, f"bastion: {reason}")
        identity = self.identity
        subject = Subject(identity.user, identity.groups, host.name, host.labels, None)
        decision = Gate(self.ctx, subject, self.source).decide(Connect())
        if not decision.allowed:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, f"bastion: {denial(decision, Connect())}"
            )
        self._take_channel("hop")
        channel_id = f"{self.id}{new_connection_id()[:4]}"
        log("channel", connection=self.id, channel=channel_id, user=self.identity.user, destination=destination)
        try:
            return inner_connection(self.ctx, self.identity, host, self.source, channel_id, self.channels.give_back)
        except BaseException:
            self.channels.give_back()
            raise

    def _take_channel(self, kind: str) -> None:
        """Count a channel of this connection, or refuse it (audited) past [server] max_channels_per_connection."""
        if self.channels.take():
            return
        reason = f"too many channels on one connection (at most {self.channels.limit} at once)"
        self.ctx.audit("channel.refused", connection=self.id, user=self.user, source=self.source, kind=kind,
                       reason=reason)  # fmt: skip
        raise asyncssh.ChannelOpenError(asyncssh.OPEN_RESOURCE_SHORTAGE, f"bastion: {reason}")

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        return refuse_listener(self.ctx, self.user, self.id, f"{listen_host}:{listen_port}")

    def unix_server_requested(self, listen_path: str) -> bool:
        return refuse_listener(self.ctx, self.user, self.id, listen_path, "stream-local")

    def unix_connection_requested(self, dest_path: str) -> bool:
        reason = "stream-local (Unix socket) forwards are not offered"
        self.ctx.audit("channel.refused", connection=self.id, user=self.user, source=self.source,
                       destination=dest_path, reason=reason)  # fmt: skip
        raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, f"bastion: {reason}")

    def session_requested(self) -> asyncssh.SSHServerSession[bytes]:
        self._take_channel("session")
        if self.login_flow is not None:
            return IssuanceSession(self.ctx, self.login_flow, closed=self.channels.give_back)
        return BastionShell(self.ctx, self.identity, closed=self.channels.give_back)


class BastionShell(asyncssh.SSHServerSession[bytes]):
    """`ssh bastion`: no shell, but the approvers' commands: approvals list, approve ID, deny ID --reason R."""

    def __init__(self, ctx: BastionContext, identity: Identity, closed: Callable[[], None] | None = None) -> None:
        self.ctx = ctx
        self.identity = identity
        self.chan: asyncssh.SSHServerChannel[bytes] | None = None
        self.command = ""
        self.task: asyncio.Future[None] | None = None
        self._closed = once(closed)

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:  # type: ignore[override]
        self.chan = chan

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed()

    def pty_requested(self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Any) -> bool:
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        self.command = command
        return True

    def eof_received(self) -> bool:
        return True  # the answer is still to be written

    def session_started(self) -> None:
        assert self.chan is not None
        try:
            argv = shlex.split(self.command)
        except ValueError:
            argv = self.command.split()
        if "--reason" in argv[:-1]:  # ssh joins its arguments with spaces: the rest of the line is the reason
            at = argv.index("--reason") + 1
            argv = [*argv[:at], " ".join(argv[at:])]
        if argv and argv[0] in APPROVER_COMMANDS:
            self.task = asyncio.ensure_future(self._approvals(argv))
            return
        hosts = ", ".join(h.name for h in self.ctx.settings.hosts) or "(none configured)"
        self.chan.write_stderr(
            f"bastion: there is no shell here, {self.identity.user}. Reach a host with: ssh -J <this bastion> HOST\r\n"
            f"bastion: hosts: {hosts}\r\n"
            "bastion: approvers: ssh <this bastion> approvals list | approve ID | deny ID --reason R\r\n".encode()
        )
        self.chan.exit(1)

    def _masked(self, text: str) -> str:
        return self.ctx.masker.mask_text(text) if self.ctx.masker is not None else text

    async def _approvals(self, argv: list[str]) -> None:
        assert self.chan is not None
        identity = self.identity
        if identity.workload:  # approvals are a person's decision: an agent never approves, not even another's
            self.ctx.audit("approval.refused", user=identity.user, serial=identity.serial,
                           command=self._masked(" ".join(argv))[:200], reason="workload identity")  # fmt: skip
            self.chan.write_stderr(
                f"bastion: approvals are decided by people; {identity.user} logged in as a workload\n".encode()
            )
            self.chan.exit(1)
            return
        try:
            status, text = await asyncio.to_thread(
                approvals_command, argv, identity.user, identity.groups, self.ctx.approvals
            )
        except Exception as exc:  # never a hang: the approver gets a line, the log the cause
            log("internal.error", where="approvals", user=identity.user, error=repr(exc))
            status, text = 1, "bastion: internal error; see its log"
        if not self.chan.is_closing():
            data = (text.rstrip("\n") + "\n").encode() if text else b""
            (self.chan.write if status == 0 else self.chan.write_stderr)(data)
            self.chan.exit(status)


async def listen(ctx: BastionContext) -> asyncio.AbstractServer:
    """Start accepting connections on [server] listen."""
    settings = ctx.settings.server
    options = server_options(
        server_factory=lambda: OuterServer(ctx),
        server_host_keys=[(ctx.authorities.host_key, ctx.authorities.outer_host_certificate(settings.names))],
        password_auth=False,
        kbdint_auth=True,  # offered only to the reserved users `token` and `login` (kbdint_auth_supported)
        gss_host=None,
        host_based_auth=False,
        login_timeout=settings.login_grace,
        keepalive_interval=60,
    )
    loop = asyncio.get_running_loop()

    def connection_factory() -> OuterConnection:
        conn = OuterConnection(loop, options, None, None)
        conn.ctx = ctx
        return conn

    host, port = settings.listen
    return await loop.create_server(connection_factory, host, port, reuse_address=True)
