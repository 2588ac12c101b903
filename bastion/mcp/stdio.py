"""An MCP stdio server over SSH exec: lines split both ways, each through the inspector; held calls wait on the gate.

The session bridge hands over the client's input and the target's stdout; this class turns them into
messages (one per line), asks the inspector, and writes what it says to each side and to the recording.
A tool call that policy holds waits on the gate in a task of its own, so the session goes on meanwhile
(other calls, notifications, the server's own requests); `notifications/cancelled` withdraws it. A hold
binds to the call's server, tool and arguments, not to its JSON-RPC id: the same call sent again while
it waits joins its request, and once approved, a retry or a 2026-07-28 multi-round-trip re-send (a new id,
the same arguments) in the session goes through without a second request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from bastion.control.actions import action_key
from bastion.control.gate import Gate, Verdict
from bastion.mcp.inspector import McpInspector, Out, ToolCall
from bastion.mcp.jsonrpc import INVALID_REQUEST, Malformed, MessageId

__all__ = ["McpStdio"]


class _Lines:
    """Newline-delimited messages from a byte stream; a line over the limit is dropped up to its end."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._partial = bytearray()
        self._skipping = 0  # bytes of an over-long line dropped so far (0: not skipping)

    def feed(self, data: bytes) -> list[bytes | Malformed]:
        found: list[bytes | Malformed] = []
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            piece = data[start:end]
            start = end + 1
            if self._skipping:
                found.append(self._too_long(self._skipping + len(piece)))
                self._skipping = 0
                continue
            line = bytes(self._partial + piece) if self._partial else piece
            self._partial.clear()
            line = line.rstrip(b"\r")
            if line.strip():
                found.append(line)
        rest = data[start:]
        if self._skipping:
            self._skipping += len(rest)
        elif len(self._partial) + len(rest) > self._limit:
            self._skipping = len(self._partial) + len(rest)
            self._partial.clear()
        else:
            self._partial += rest
        return found

    def _too_long(self, size: int) -> Malformed:
        return Malformed(INVALID_REQUEST, f"message of {size} bytes is over the limit of {self._limit}", size=size)


class McpStdio:
    """One stdio MCP session between the client's channel and the target's exec channel."""

    def __init__(
        self,
        inspector: McpInspector,
        gate: Gate | None,
        to_server: Callable[[bytes], None],
        to_client: Callable[[bytes], None],
        record: Callable[[dict[str, Any]], None],
        max_message: int,
    ) -> None:
        self.inspector = inspector
        self._gate = gate
        self._to_server = to_server
        self._to_client = to_client
        self._record = record
        self._client_lines = _Lines(max_message)
        self._server_lines = _Lines(max_message)
        self._waits: dict[str, asyncio.Task[None]] = {}  # by the call's key (server, tool, arguments): one request
        self._waiting: dict[str, list[ToolCall]] = {}  # the calls each request holds (a retry joins the first)
        self._approved: dict[str, int] = {}  # calls approved in this session, and by which request

    def client_data(self, data: bytes) -> None:
        for line in self._client_lines.feed(data):
            if isinstance(line, Malformed):
                self._apply(self.inspector.refuse_malformed(line, "client"))
            else:
                self._apply(self.inspector.from_client(line))

    def server_data(self, data: bytes) -> None:
        for line in self._server_lines.feed(data):
            if isinstance(line, Malformed):
                self._apply(self.inspector.refuse_malformed(line, "server"))
            else:
                self._apply(self.inspector.from_server(line))

    def close(self) -> None:
        """The session ended: held calls are withdrawn (their approval requests too)."""
        for task in self._waits.values():
            task.cancel()
        self._waits.clear()
        self._waiting.clear()

    def _apply(self, out: Out) -> None:
        for event in out.events:
            self._record(event)
        for line in out.to_server:
            self._to_server(line + b"\n")
        for line in out.to_client:
            self._to_client(line + b"\n")
        for request_id in out.cancelled:
            self._withdraw(request_id)
        for call in out.calls:
            self._decide(call)

    def _decide(self, call: ToolCall) -> None:
        if self._gate is None:
            self._apply(self.inspector.forward_call(call))
            return
        key = action_key(call.action)
        if key in self._approved:  # a retry, or a multi-round-trip re-send (a new id), of an approved call
            self._gate.record(
                self._gate.shown(call.action), self._gate.ctx.policy.decide(self._gate.subject, call.action),
                "allow", request=self._approved[key], again=True,
            )  # fmt: skip
            self._apply(self.inspector.forward_call(call))
            return
        if key in self._waits:  # the same call while its request waits: one request for both
            self._waiting[key].append(call)
            return
        verdict = self._gate.settle(call.action)
        if verdict is not None:
            self._settled(call, verdict)
            return
        self._waiting[key] = [call]
        task = asyncio.ensure_future(self._wait(key, call))
        self._waits[key] = task

    async def _wait(self, key: str, first: ToolCall) -> None:
        assert self._gate is not None
        steps = 0

        def waiting(text: str) -> None:
            nonlocal steps
            steps += 1
            for call in self._waiting.get(key, [first]):
                self._apply(self.inspector.waiting(call, text, steps))

        try:
            verdict = await self._gate.check(first.action, waiting)
        finally:
            self._waits.pop(key, None)
        if verdict.allowed and verdict.request is not None:
            self._approved[key] = verdict.request
        for call in self._waiting.pop(key, []):
            self._settled(call, verdict)

    def _withdraw(self, request_id: MessageId) -> None:
        """The client cancelled a held call: its request is withdrawn once no other call waits on it."""
        for key, calls in list(self._waiting.items()):
            self._waiting[key] = [call for call in calls if call.id != request_id]
            if not self._waiting[key]:
                del self._waiting[key]
                task = self._waits.pop(key, None)
                if task is not None:
                    task.cancel()

    def _settled(self, call: ToolCall, verdict: Verdict) -> None:
        if verdict.allowed:
            self._apply(self.inspector.forward_call(call))
        else:
            self._apply(self.inspector.refuse_call(call, verdict.message))
