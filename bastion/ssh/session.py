"""Bridges one session channel (shell, exec or subsystem) from the client to the target.

The client side is the inner server's channel; the target side is a channel on the upstream
connection. Bytes flow both ways with SSH flow control carried across: when one side's send
buffer fills, the other side stops reading, so a slow peer never makes the bastion buffer a file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import asyncssh

from bastion.audit import events as ev
from bastion.audit.recording import SessionRecording
from bastion.control.actions import Action, Exec, Shell
from bastion.control.gate import DENIED_STATUS, REASON_ENV, Gate
from bastion.logs import log
from bastion.masking.config import MaskingSettings
from bastion.masking.masker import Masker
from bastion.masking.output import MaskedOutput
from bastion.masking.values import mask_env
from bastion.mcp.config import McpServer, McpSettings
from bastion.mcp.session import open_stdio
from bastion.mcp.stdio import McpStdio
from bastion.shell.gating import PipedLines, ShellLines, runs_a_shell
from bastion.shell.tracker import ShellLineTracker
from bastion.ssh.limits import once, terminal_size
from bastion.ssh.sftp import FileOperation, SftpInspector, Transfer

SUBSYSTEMS = ("sftp",)
SHELL_SYNTAX = ";&|$`<>()\n\r"
SFTP_MAX_PACKET = 16 * 1024 * 1024
# Target data arrives in chunks of at most this size, so that one chunk plus the inner SSH
# packet's framing fits in one packet of the outer channel (OpenSSH's 32 KiB): halves the
# packets the bastion sends for bulk output (measured: 49k -> 25k sends per 200 MB).
UPSTREAM_MAX_PACKET = 31 * 1024
MAX_LISTED_ENV = 50  # names of dropped environment variables listed in one audit entry (the count is whole)
MAX_ENV_NAME = 100  # characters of each listed name


def is_transfer(command: str | None, subsystem: str | None) -> bool:
    """sftp, or scp's remote end (`scp -t`/`scp -f` and nothing else): file contents, counted, not recorded,
    and not masked unless [masking] transfers = true."""
    if subsystem is not None:
        return True
    command = command or ""
    if any(char in command for char in SHELL_SYNTAX):
        return False  # `scp -h; cat .env` is a shell command line, not a transfer
    words = command.split()
    return words[:1] == ["scp"] and bool({"-t", "-f"} & set(words))


class TargetSide(asyncssh.SSHClientSession[bytes]):
    """The upstream half: what the target sends goes to the client and the recording."""

    def __init__(self, bridge: SessionBridge) -> None:
        self.bridge = bridge
        self.exit_status: int | None = None
        self.exit_signal: tuple[str, bool, str, str] | None = None

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.bridge.from_target(data, datatype == asyncssh.EXTENDED_DATA_STDERR)

    def eof_received(self) -> bool:
        self.bridge.target_eof()
        return True

    def exit_status_received(self, status: int) -> None:
        self.exit_status = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self.exit_signal = (signal, core_dumped, msg, lang)

    def pause_writing(self) -> None:
        self.bridge.client_reading(False)

    def resume_writing(self) -> None:
        self.bridge.client_reading(True)

    def connection_lost(self, exc: Exception | None) -> None:
        self.bridge.target_closed(self, exc)


class SessionBridge(asyncssh.SSHServerSession[bytes]):
    """The client half, presented by the inner server; opens the target half when started."""

    def __init__(
        self,
        upstream: asyncssh.SSHClientConnection,
        recording: SessionRecording,
        env_accepted: Callable[[str], bool],
        gate: Gate | None = None,
        masking: tuple[Masker, MaskingSettings] | None = None,
        audit: Callable[..., None] | None = None,
        closed: Callable[[], None] | None = None,
        mcp: tuple[tuple[McpServer, ...], McpSettings] | None = None,
    ) -> None:
        self.gate = gate
        self.mcp_servers = mcp  # the host's declared MCP servers, and [mcp]
        self.mcp: McpStdio | None = None  # an exec of a declared stdio server: every message inspected
        self._audit = audit or (lambda type_, **fields: log(type_, **fields))
        self._closed = once(closed)  # the connection's channel count, told when the channel is gone
        self.masking = masking
        self.masked: MaskedOutput | None = None  # set when the session starts (not for file transfers by default)
        self.upstream = upstream
        self.recording = recording
        self.env_accepted = env_accepted
        self.client: asyncssh.SSHServerChannel[bytes] | None = None
        self.target: asyncssh.SSHClientChannel[bytes] | None = None
        self.pty: tuple[str, tuple[int, int, int, int], dict[int, int]] | None = None
        self.command: str | None = None
        self.subsystem: str | None = None
        self.sftp: SftpInspector | None = None
        self.transfer = False  # file contents (sftp, scp): decided once, when the session starts
        self._clamp_audited = False
        self._sftp_broken_noted = False
        self.pending_eof = False
        self.pending_input: list[bytes] = []  # what arrived before the target side opened
        self.client_gone = False
        self._start: asyncio.Task[None] | None = None
        self.lines: ShellLines | None = None  # interactive shells: each line decided at Enter
        self.piped: PipedLines | None = None  # shells without a pty: each input line decided

    # Requests from the client, before the session starts.
    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:  # type: ignore[override]
        self.client = chan

    def pty_requested(
        self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Mapping[int, int]
    ) -> bool:
        cols, rows = self._terminal_size(term_size[0], term_size[1])
        self.pty = (term_type, (cols, rows, *term_size[2:]), dict(term_modes))
        self.recording.note(ev.PTY, term=term_type, cols=cols, rows=rows)
        self.recording.describe(term=term_type, cols=cols, rows=rows)
        return True

    def shell_requested(self) -> bool:
        self._gate_lines()
        self.recording.describe(kind="shell")
        self.recording.note(ev.SHELL)
        return True

    def exec_requested(self, command: str) -> bool:
        self.command = command
        shown = self.masking[0].mask_text(command) if self.masking is not None else command  # stored: masked
        self.recording.describe(kind="exec", command=shown)
        self.recording.note(ev.EXEC, command=shown)
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        if subsystem not in SUBSYSTEMS:
            self.recording.note(ev.MARKER, text=f"subsystem {subsystem!r} refused")
            return False
        self.subsystem = subsystem
        # Payloads are skipped, not buffered, so a generous frame limit costs no memory; asyncssh
        # peers negotiate 4 MiB packets, OpenSSH's sftp-server 256 KiB.
        self.sftp = SftpInspector(max_packet=SFTP_MAX_PACKET)
        self.recording.describe(kind="subsystem", command=subsystem)
        self.recording.note(ev.SUBSYSTEM, name=subsystem)
        return True

    def session_started(self) -> None:
        assert self.client is not None
        self.client.pause_reading()  # until the target side exists
        self.transfer = is_transfer(self.command, self.subsystem)
        self._start = asyncio.ensure_future(self._open_target())

    def _gate_lines(self) -> None:
        """A shell's input is decided line by line: at Enter on a pty, per input line without one."""
        if self.gate is None:
            return
        if self.pty is not None:
            cols, rows = self.pty[1][0] or 80, self.pty[1][1] or 24
            self.lines = ShellLines(ShellLineTracker(cols, rows), self.gate, self._say)
        else:
            self.piped = PipedLines(self.gate, self.tell)

    def _action(self) -> Action:
        if self.command is not None and runs_a_shell(self.command):
            return Shell()  # `ssh -t host bash` is a shell: decided as one, and its lines too
        if self.command is not None:
            return Exec(self.command)
        if self.subsystem is not None:
            return Exec(self.subsystem)  # rules name the sftp subsystem as the command "sftp"
        return Shell()

    def tell(self, line: str) -> None:
        """One line from the bastion on the user's stderr."""
        if self.client is not None and not self.client_gone:
            end = "\r\n" if self.pty else "\n"
            self.client.write_stderr(f"bastion: {line}{end}".encode())

    async def _allowed(self, action: Action) -> bool:
        if self.gate is None:
            return True
        reason = self.client.get_environment().get(REASON_ENV, "") if self.client is not None else ""
        verdict = await self.gate.check(action, self.tell, str(reason)[:500])
        if verdict.allowed or self.client is None or self.client_gone:
            return verdict.allowed
        self.tell(verdict.message)
        self.recording.close(verdict.message, exit_status=DENIED_STATUS)
        self.client.exit(DENIED_STATUS)
        return False

    async def _open_target(self) -> None:
        assert self.client is not None
        if not await self._allowed(self._action()):
            return
        if self.command is not None and runs_a_shell(self.command):
            self._gate_lines()
        if self.command is not None and self.mcp_servers is not None:
            self.mcp = open_stdio(self.command, *self.mcp_servers, self.gate, self.masking, self.recording,
                                  to_server=self._to_target, to_client=self._mcp_to_client)  # fmt: skip
        if self.masking is not None:
            masker, settings = self.masking
            if settings.transfers or not self.transfer:
                self.masked = MaskedOutput(
                    masker,
                    asyncio.get_running_loop(),
                    show=self._show,
                    record=self._record,
                    idle_release=settings.idle_release or 0.0,
                    strong_hold=settings.strong_hold,
                )
                self.recording.count_maskings = self.masked.counts  # summed once, when the recording closes
        requested = self.client.get_environment()
        env = {k: v for k, v in requested.items() if self.env_accepted(k)}
        self._audit_dropped_env(sorted(name for name in requested if name not in env and name != REASON_ENV))
        for name, value in sorted(env.items()):
            shown_name, shown_value = self._masked_env(name, value)
            self.recording.note(ev.ENV, name=shown_name, value=shown_value)
        options: dict[str, Any] = {"env": env or (), "encoding": None, "max_pktsize": UPSTREAM_MAX_PACKET}
        if self.pty is not None:
            term, size, modes = self.pty
            options.update(term_type=term, term_size=size, term_modes=modes)
        try:
            self.target, _ = await self.upstream.create_session(
                lambda: TargetSide(self), self.command, subsystem=self.subsystem, **options
            )
        except (asyncssh.Error, OSError) as exc:
            reason = self._masked(getattr(exc, "reason", None) or str(exc))
            self.client.write_stderr(f"bastion: the target refused the session: {reason}\r\n".encode())
            self.recording.note(ev.MARKER, text=f"target refused the session: {reason}")
            self.recording.close("target refused the session", exit_status=255)
            self.client.exit(255)
            return
        log(
            "session.start",
            session=self.recording.id,
            kind=self.recording.info.kind,
            command=self.recording.info.command or self.subsystem or "",
            user=self.recording.info.user,
            target=self.recording.info.target,
            login=self.recording.info.login,
        )
        if self.client_gone:
            self.target.close()
            return
        for data in self.pending_input:
            self._forward(data)
        self.pending_input.clear()
        if self.pending_eof:
            self._forward_eof()
        self.client.resume_reading()

    def _forward(self, data: bytes) -> None:
        assert self.target is not None
        if self.mcp is not None:
            self.mcp.client_data(data)
        elif self.lines is not None:
            self.lines.typed(data, self.target)
        elif self.piped is not None:
            self.piped.typed(data, self.target)
        else:
            self.target.write(data)

    def _to_target(self, data: bytes) -> None:
        if self.target is not None and not self.target.is_closing():
            self.target.write(data)

    def _mcp_to_client(self, data: bytes) -> None:
        """An MCP message for the client (masked by the inspector; recorded as an `mcp` event, not as bytes)."""
        if self.client_gone or self.client is None or self.client.is_closing() or self.recording.closed:
            return
        self.recording.bytes_out += len(data)
        self.client.write(data)

    def _forward_eof(self) -> None:
        assert self.target is not None
        if self.piped is not None:
            self.piped.eof(self.target)  # after the lines still being decided
        else:
            self.target.write_eof()

    # Client -> target.
    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.recording.input(len(data))
        if self.sftp is not None:
            self._transfers(self.sftp.client_data(data))
        if datatype == asyncssh.EXTENDED_DATA_STDERR:
            return  # clients do not send stderr; OpenSSH drops it too
        if self.target is None:  # delivered before pause_reading took effect; bounded by the window
            self.pending_input.append(data)
        else:
            self._forward(data)

    def _say(self, line: str) -> None:
        """A line from the bastion in a shell: on the user's screen, in the tracker and in the recording."""
        if self.client is None or self.client_gone:
            return
        message = f"\r\nbastion: {line}\r\n".encode()
        if self.masked is not None:
            self.masked.drain()  # output that came before this line goes out before it
        if self.lines is not None:
            self.lines.tracker.output(message)
        self.recording.output(message)
        self.client.write(message)

    def eof_received(self) -> bool:
        self.recording.note(ev.EOF_, **{"from": "client"})
        if self.target is None:
            self.pending_eof = True
        else:
            self._forward_eof()
        return True

    def _terminal_size(self, cols: int, rows: int) -> tuple[int, int]:
        """The size used for a requested one; an absurd size is clamped, noted in the recording and audited."""
        size = terminal_size(cols, rows)
        if size != (cols, rows):
            text = f"terminal size {cols}x{rows} clamped to {size[0]}x{size[1]}"
            self.recording.note(ev.MARKER, text=text)
            info = self.recording.info
            if self._clamp_audited:
                return size  # once per session in the audit log (a client can send window changes in a loop)
            self._clamp_audited = True
            self._audit("terminal.clamped", session=info.id, user=info.user, target=info.target,
                        requested=[cols, rows], applied=list(size))  # fmt: skip
        return size

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        width, height = self._terminal_size(width, height)
        self.recording.note(ev.RESIZE, cols=width, rows=height)
        if self.lines is not None:
            self.lines.tracker.resize(width, height)
        if self.target is not None:
            self.target.change_terminal_size(width, height, pixwidth, pixheight)

    def signal_received(self, signal: str) -> None:
        self.recording.note(ev.SIGNAL, name=signal)
        if self.target is not None:
            self.target.send_signal(signal)

    def break_received(self, msec: int) -> bool:
        self.recording.note(ev.BREAK, msec=msec)
        if self.target is not None:
            self.target.send_break(msec)
        return True

    def pause_writing(self) -> None:
        if self.target is not None:
            self.target.pause_reading()

    def resume_writing(self) -> None:
        if self.target is not None:
            self.target.resume_reading()

    def terminate(self, reason: str) -> None:
        """End the session from the bastion's side (revocation, shutdown): say why, record it, close."""
        if self.client_gone or self.recording.closed:
            return
        if self.masked is not None:
            self.masked.flush()  # output the target sent before the end is shown and recorded, masked
        self.recording.note(ev.MARKER, text=reason)
        self.recording.close(reason)
        if self.client is not None:
            self.client.write_stderr(f"\r\nbastion: {reason}\r\n".encode())
            self.client.exit(255)
        if self.target is not None:
            self.target.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.client_gone = True
        if self.masked is not None:
            self.masked.flush()  # what the client may have been shown early is recorded, masked
        self._closed()
        if self.lines is not None:
            self.lines.close()  # a line waiting for approval: the request is withdrawn
        if self.mcp is not None:
            self.mcp.close()  # a tool call waiting for approval: the request is withdrawn
        if self.piped is not None:
            self.piped.close()
        if self.target is not None:
            self.target.close()
        elif self._start is not None and not self._start.done():
            self._start.cancel()
        self._finish_transfers()
        self.recording.close("client closed the session" if exc is None else f"client connection lost: {exc}")

    # Target -> client.
    def from_target(self, data: bytes, stderr: bool) -> None:
        if self.client_gone or self.client is None:
            return
        if self.sftp is not None:
            self._transfers(self.sftp.server_data(data))
        if self.lines is not None:
            self.lines.output(data)  # shell lines are decided on what the shell has, not on the masked view
        if self.mcp is not None and not stderr:
            self.mcp.server_data(data)  # each message parsed and masked value by value
        elif self.masked is not None:
            self.masked.feed(data, stderr)  # -> _show and _record, now or when the masker releases what it holds
        else:
            self._emit(data, stderr)

    def _emit(self, data: bytes, stderr: bool) -> None:
        """Output as the user may see it, unmasked (masking off): to the recording and the client."""
        self._record(data, stderr)
        self._show(data, stderr)

    def _record(self, data: bytes, stderr: bool) -> None:
        """Output for the recording: masked, and only once the masker has decided it. (The shell-line
        tracker has already seen it raw, in from_target.)"""
        if self.recording.closed:
            return
        if self.transfer:
            self.recording.bytes_out += len(data)  # file contents are counted, not recorded
        else:
            self.recording.output(data, stderr)

    def _show(self, data: bytes, stderr: bool) -> None:
        """Output for the client: masked, and possibly shown before the recording has it (see MaskedOutput)."""
        if self.client_gone or self.client is None or self.client.is_closing() or self.recording.closed:
            return
        if stderr:
            self.client.write_stderr(data)
        else:
            self.client.write(data)

    def _after_output(self, then: Callable[[], None]) -> None:
        """Run `then` once every byte of output before it has been masked and sent."""
        if self.masked is not None:
            self.masked.after(then)
        else:
            then()

    def target_eof(self) -> None:
        self._after_output(self._eof_to_client)

    def _eof_to_client(self) -> None:
        self.recording.note(ev.EOF_, **{"from": "target"})
        if self.client is not None and not self.client_gone:
            self.client.write_eof()

    def client_reading(self, on: bool) -> None:
        if self.client is not None and not self.client_gone:
            if on:
                self.client.resume_reading()
            else:
                self.client.pause_reading()

    def target_closed(self, side: TargetSide, exc: Exception | None) -> None:
        self._after_output(lambda: self._close_client(side, exc))

    def _close_client(self, side: TargetSide, exc: Exception | None) -> None:
        self._finish_transfers()
        if self.client_gone or self.client is None:
            return
        if side.exit_status is not None:
            self.recording.close("exit", exit_status=side.exit_status)
            self.client.exit(side.exit_status)
        elif side.exit_signal is not None:
            signal, core_dumped, msg, lang = side.exit_signal
            self.recording.close("exit", exit_signal=signal)
            self.client.exit_with_signal(signal, core_dumped, self._masked(msg), lang)
        else:
            reason = "target closed the session" if exc is None else f"target connection lost: {exc}"
            self.recording.close(reason)
            self.client.close()

    def _masked(self, text: str) -> str:
        """Text from the target shown to the client or stored: masked, if masking is on."""
        return self.masking[0].mask_text(text) if self.masking is not None else text

    def _masked_env(self, name: str, value: str) -> tuple[str, str]:
        """A variable as stored: a value is masked whole when its name says it is secret (`LC_DB_PASSWORD`)
        or when masking `NAME=value` finds anything in it; the masker alone would mask only a first word."""
        return mask_env(self.masking[0], name, value) if self.masking is not None else (name, value)

    def _audit_dropped_env(self, names: list[str]) -> None:
        """Variables the client sent that [server] accept_env does not pass on: evidence of what was tried."""
        if not names:
            return
        shown = [self._masked(name[:MAX_ENV_NAME]) for name in names[:MAX_LISTED_ENV]]
        self.recording.note(ev.MARKER, text=f"environment not passed on: {', '.join(shown)}")
        info = self.recording.info
        self._audit("env.dropped", session=info.id, user=info.user, target=info.target, names=shown,
                    count=len(names))  # fmt: skip

    def _transfers(self, found: list[Transfer | FileOperation]) -> None:
        if self.sftp is not None and self.sftp.broken and not self._sftp_broken_noted:
            self._sftp_broken_noted = True
            self.recording.note(ev.MARKER, text=f"sftp inspection stopped: {self.sftp.reason}")
            log("sftp.inspection_stopped", session=self.recording.id, reason=self.sftp.reason)
        for item in found:
            if isinstance(item, Transfer):
                self.recording.note(
                    ev.TRANSFER,
                    protocol="sftp",
                    op=item.op,
                    path=item.path,
                    bytes=item.bytes_read + item.bytes_written,
                    status=item.status,
                )
            else:
                self.recording.note(ev.TRANSFER, protocol="sftp", op=item.op, path=item.path, target=item.target)

    def _finish_transfers(self) -> None:
        if self.sftp is not None:
            self._transfers(list(self.sftp.close()))
            self.sftp = None
