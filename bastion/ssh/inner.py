"""The SSH server the bastion runs inside a direct-tcpip channel, presented as one target.

It shows a host certificate for the target's name, signed by the host CA, so the client's
`@cert-authority` line verifies it. Nobody authenticates again: the identity is the one proven
on the outer connection. The inner user name chooses the login on the target; before saying yes
the bastion connects upstream, so a refusal reaches the user as one line in the auth banner.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar, cast

import asyncssh
from asyncssh.forward import SSHForwarder

from bastion.audit.events import SessionInfo
from bastion.audit.recording import SessionRecording
from bastion.config import HostSettings
from bastion.control.actions import Connect, Forward, Subject
from bastion.control.gate import Gate, denial
from bastion.identity.ca import Identity
from bastion.logs import log
from bastion.ssh import upstream
from bastion.ssh.context import BastionContext, server_options
from bastion.ssh.limits import ChannelCount, once
from bastion.ssh.session import SessionBridge

TARGET_SELF = ("localhost", "127.0.0.1", "::1")  # how a forward names the target itself
T = TypeVar("T")


async def _pipe(reader: asyncssh.SSHReader[bytes], writer: asyncssh.SSHWriter[bytes]) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
    except (asyncssh.Error, OSError, BrokenPipeError):
        writer.close()


async def _bridge(
    reader: asyncssh.SSHReader[bytes],
    writer: asyncssh.SSHWriter[bytes],
    target_reader: asyncssh.SSHReader[bytes],
    target_writer: asyncssh.SSHWriter[bytes],
) -> None:
    """Both ways until both ends are done, or until either channel closes: then the other is closed too
    (EOF is passed on as EOF; a close is a close, as asyncssh's own forwarder does)."""
    pipes: asyncio.Future[Any] = asyncio.gather(_pipe(reader, target_writer), _pipe(target_reader, writer))
    closing: list[asyncio.Future[Any]] = [
        asyncio.ensure_future(end.channel.wait_closed()) for end in (writer, target_writer)
    ]
    try:
        await asyncio.wait({pipes, *closing}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in closing:
            waiter.cancel()
        writer.close()
        target_writer.close()
        pipes.cancel()
        with contextlib.suppress(asyncio.CancelledError, asyncssh.Error, OSError):
            await pipes


class _CountedForwarder(SSHForwarder):
    """asyncssh's own forwarder for the client's side of a forward, telling once when the channel is gone."""

    def __init__(self, peer: SSHForwarder, closed: Callable[[], None]) -> None:
        super().__init__(peer)
        self._closed = once(closed)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._closed()


async def _unless_closed(check: Awaitable[T], writer: asyncssh.SSHWriter[bytes]) -> T | None:
    """`check`'s result, or None if the channel closes first (the client left): `check` is then
    cancelled, which withdraws an approval request it is waiting on."""
    checking = asyncio.ensure_future(check)
    closed = asyncio.ensure_future(writer.channel.wait_closed())
    try:
        await asyncio.wait({checking, closed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        closed.cancel()
        if not checking.done():
            checking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checking
    return None if checking.cancelled() else checking.result()


class InnerServer(asyncssh.SSHServer):
    """One `ssh -J` hop, presented as the target: login, sessions and forwards, each counted and decided."""

    def __init__(
        self,
        ctx: BastionContext,
        identity: Identity,
        host: HostSettings,
        source: str,
        connection_id: str,
        closed: Callable[[], None] | None = None,
    ) -> None:
        self.ctx = ctx
        self.channels = ChannelCount(ctx.settings.server.max_channels_per_connection)
        self._closed = once(closed)  # the outer connection's count of this hop
        self.identity = identity
        self.host = host
        self.source = source
        self.connection_id = connection_id
        self.conn: asyncssh.SSHServerConnection | None = None
        self.upstream: asyncssh.SSHClientConnection | None = None
        self.login = ""
        self.sessions = 0
        self._lost = False  # the hop's channel is gone

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn

    def subject(self, login: str | None = None) -> Subject:
        identity = self.identity
        return Subject(identity.user, identity.groups, self.host.name, self.host.labels, login or self.login)

    def _refuse(self, event: str, message: str, **fields: Any) -> bool:
        self.ctx.audit(
            event,
            user=self.identity.user,
            target=self.host.name,
            connection=self.connection_id,
            source=self.source,
            reason=message,
            **fields,
        )
        if self.conn is not None:
            self.conn.send_auth_banner(f"bastion: {message}\r\n")
        return True  # auth stays required and no method is offered: the client is refused

    async def begin_auth(self, username: str) -> bool:
        if username not in self.host.logins:
            allowed = ", ".join(self.host.logins)
            return self._refuse(
                "login.refused",
                f"login {username!r} is not allowed on {self.host.name} (allowed: {allowed})",
                login=username,
            )
        decision = Gate(self.ctx, self.subject(username), self.source).decide(Connect())
        if not decision.allowed:
            return self._refuse("login.refused", denial(decision, Connect()), login=username)
        try:
            self.upstream = await upstream.connect(
                self.ctx.authorities,
                self.host,
                username,
                self.identity.user,
                self.connection_id,
                self.ctx.settings.certificates.upstream_ttl,
            )
        except upstream.UpstreamError as exc:
            return self._refuse("upstream.failed", str(exc), login=username)
        if self._lost:  # the hop closed while the bastion connected upstream: nobody will use it
            self.upstream.close()
            self.upstream = None
            return True
        self.login = username
        self.ctx.audit(
            "login",
            user=self.identity.user,
            serial=self.identity.serial,
            target=self.host.name,
            login=username,
            connection=self.connection_id,
            source=self.source,
        )
        return False

    def _refuse_channel(self, kind: str, reason: str) -> NoReturn:
        self.ctx.audit("channel.refused", user=self.identity.user, target=self.host.name, kind=kind,
                       connection=self.connection_id, source=self.source, reason=reason)  # fmt: skip
        raise asyncssh.ChannelOpenError(asyncssh.OPEN_RESOURCE_SHORTAGE, f"bastion: {reason}")

    def _take_channel(self, kind: str) -> None:
        """Count a channel of this connection, or refuse it (audited) past [server] max_channels_per_connection."""
        if not self.channels.take():
            self._refuse_channel(kind, f"too many channels on one connection (at most {self.channels.limit} at once)")

    def _live_sessions_of(self, user: str) -> int:
        return sum(1 for b in list(self.ctx.bridges) if b.recording.info.user == user and not b.recording.closed)

    def session_requested(self) -> SessionBridge | bool:
        if self.upstream is None:
            return False
        limit = self.ctx.settings.server.max_sessions_per_user
        if self._live_sessions_of(self.identity.user) >= limit:
            self._refuse_channel("session", f"{self.identity.user} has {limit} sessions open, the most allowed at once")
        self._take_channel("session")
        self.sessions += 1
        session_id = f"{self.connection_id}-{self.sessions}"
        try:
            recording = self._new_recording(session_id)
        except Exception as exc:  # never a silent drop: the user and the log get one line
            self.channels.give_back()
            log("internal.error", connection=self.connection_id, where="session", error=repr(exc))
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_CONNECT_FAILED, "bastion: internal error; see its log"
            ) from None
        gate = Gate(self.ctx, self.subject(), self.source, recording)
        masker = self.ctx.masker
        masking = (masker, self.ctx.settings.masking) if masker is not None and masker.detectors else None
        bridge = SessionBridge(
            self.upstream,
            recording,
            self.ctx.settings.server.env_accepted,
            gate,
            masking,
            audit=self.ctx.audit,
            closed=self.channels.give_back,
            mcp=(self.host.mcp, self.ctx.settings.mcp) if self.host.mcp else None,
        )
        self.ctx.bridges.add(bridge)
        return bridge

    def _new_recording(self, session_id: str) -> SessionRecording:
        info = SessionInfo(
            id=session_id,
            connection_id=self.connection_id,
            user=self.identity.user,
            groups=self.identity.groups,
            cert_serial=self.identity.serial,
            cert_key_id=self.identity.key_id,
            source=self.source,
            target=self.host.name,
            target_address="{}:{}".format(*self.host.address),
            login=self.login,
            started_at=time.time(),
        )
        recording = SessionRecording(self.ctx.store, self.ctx.sealer, info)
        self.ctx.recordings.add(recording)
        return recording

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int) -> Any:
        """`ssh -L PORT:localhost:PORT -J bastion host`: a forward to the target's own port, if policy says so."""
        destination = f"{dest_host}:{dest_port}"
        if self.upstream is None:
            return False
        if dest_host.lower() not in TARGET_SELF:
            return self._refuse_forward(
                destination, f"forwards through {self.host.name} reach only its own ports (localhost:PORT)"
            )
        gate = Gate(self.ctx, self.subject(), self.source)
        action = Forward(dest_port)
        decision = self.ctx.policy.decide(gate.subject, action)
        if decision.effect == "deny":
            gate.record(action, decision, "deny")
            return self._refuse_forward(destination, denial(decision, action))
        self._take_channel("forward")
        upstream = self.upstream
        self.ctx.audit("forward.opened", user=self.identity.user, target=self.host.name, destination=destination,
                       connection=self.connection_id, rule=decision.rule, effect=decision.effect)  # fmt: skip
        if decision.effect == "allow":
            gate.record(action, decision, "allow")
            return self._tunnel(upstream, dest_host, dest_port)

        async def held(reader: asyncssh.SSHReader[bytes], writer: asyncssh.SSHWriter[bytes]) -> None:
            try:
                verdict = await _unless_closed(gate.check(action, lambda line: None), writer)
                if verdict is None or not verdict.allowed:
                    return  # None: the client closed the forward (or left) while it waited: withdrawn
                target_reader, target_writer = await upstream.open_connection(dest_host, dest_port, encoding=None)
                await _bridge(reader, writer, target_reader, target_writer)
            except (asyncssh.Error, OSError) as exc:
                self._forward_failed(destination, exc)
            finally:
                writer.close()
                self.channels.give_back()

        return held

    async def _tunnel(self, upstream: asyncssh.SSHClientConnection, host: str, port: int) -> SSHForwarder:
        """An allowed forward: the target's channel opens first (a refusal reaches the client as one), then
        asyncssh's forwarder joins the two channels; the connection's count is given back when it closes."""
        try:
            _, peer = await upstream.create_connection(SSHForwarder, host, port)  # type: ignore[arg-type]
        except (asyncssh.Error, OSError) as exc:
            self.channels.give_back()
            self._forward_failed(f"{host}:{port}", exc)
            reason = f"bastion: the target refused: {exc}"
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, reason) from None
        return _CountedForwarder(cast(SSHForwarder, peer), self.channels.give_back)

    def _forward_failed(self, destination: str, exc: BaseException) -> None:
        self.ctx.audit("forward.failed", user=self.identity.user, target=self.host.name, destination=destination,
                       connection=self.connection_id, error=str(exc))  # fmt: skip

    def _refuse_forward(self, destination: str, reason: str) -> bool:
        self.ctx.audit(
            "forward.refused",
            user=self.identity.user,
            target=self.host.name,
            destination=destination,
            connection=self.connection_id,
            reason=reason,
        )
        raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, f"bastion: {reason}")

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        return refuse_listener(self.ctx, self.identity.user, self.connection_id, f"{listen_host}:{listen_port}")

    def unix_server_requested(self, listen_path: str) -> bool:
        return refuse_listener(self.ctx, self.identity.user, self.connection_id, listen_path, "stream-local")

    def unix_connection_requested(self, dest_path: str) -> bool:
        self._refuse_forward(dest_path, "stream-local (Unix socket) forwards are not offered")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self.upstream is not None:
            self.upstream.close()
        self._closed()


def refuse_listener(ctx: BastionContext, user: str, connection_id: str, where: str, kind: str = "remote") -> bool:
    """A remote (-R) or stream-local listener: never offered, and each attempt is in the audit log."""
    ctx.audit("forward.refused", connection=connection_id, user=user, destination=where, kind=kind,
              reason=f"{kind} forwarding is not offered")  # fmt: skip
    return False


def inner_connection(
    ctx: BastionContext,
    identity: Identity,
    host: HostSettings,
    source: str,
    connection_id: str,
    closed: Callable[[], None] | None = None,
) -> asyncssh.SSHServerConnection:
    """A server connection to hand back as the direct-tcpip channel's session; `closed` is told when it ends."""
    options = server_options(
        server_factory=lambda: InnerServer(ctx, identity, host, source, connection_id, closed),
        server_host_keys=[(ctx.authorities.host_key, ctx.authorities.host_certificate(host.name))],
        login_timeout=ctx.settings.server.login_grace,
        keepalive_interval=0,  # the outer connection keeps alive
    )
    return asyncssh.SSHServerConnection(asyncio.get_event_loop(), options, None, None)
