"""The session of an issuance connection (`token` or `login`): print one certificate for a key, then exit.

`ssh token@bastion certificate < key.pub` (what `bastion login` runs) and `ssh login@bastion` (the
device flow with nothing but ssh) end here once login_flow.py has verified the user's token.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import asyncssh

from bastion.identity.issuance import IssuanceError, issue_certificate
from bastion.identity.oauth import (
    LoginFailed,
)
from bastion.ssh.context import BastionContext
from bastion.ssh.limits import once
from bastion.ssh.login_flow import ISSUE_COMMAND, MAX_KEY_BYTES, TOKEN_USER, LoginFlow, refuse_if_revoked


class IssuanceSession(asyncssh.SSHServerSession[bytes]):
    """The session of a `token` or `login` connection: hand out one certificate, then exit."""

    def __init__(self, ctx: BastionContext, flow: LoginFlow, closed: Callable[[], None] | None = None) -> None:
        self.ctx = ctx
        self.flow = flow
        self._closed = once(closed)  # the connection's channel count
        self.chan: asyncssh.SSHServerChannel[bytes] | None = None
        self.command = ""
        self.stdin = bytearray()
        self.pty = False
        self.task: asyncio.Future[None] | None = None
        self.record: dict[str, Any] = {}

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:  # type: ignore[override]
        self.chan = chan

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed()

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
            refuse_if_revoked(self.ctx, verified)
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
