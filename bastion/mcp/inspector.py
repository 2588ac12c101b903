"""One MCP session's messages, inspected: each parsed, every tool call decided, results masked, all recorded; pure.

Bytes in (one JSON-RPC message: a stdio line, an HTTP body), `Out` back: what goes to the server, what
goes to the client, the events for the recording, and the tool calls the caller must decide (policy,
grants, approvals: that may wait, so it is the caller's). Request ids are tracked per direction: the
client's requests (to time their responses and filter `tools/list`) and the server's own (sampling,
elicitation, roots), whose responses come from the client.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bastion.control.actions import Decision, McpTool
from bastion.mcp.jsonrpc import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    Malformed,
    Message,
    MessageId,
    encode,
    error_response,
    parse,
)

__all__ = ["DENIED", "LATEST", "McpInspector", "Out", "ToolCall"]

LATEST = "2026-07-28"  # the stateless revision: every result carries resultType
DENIED = -32001  # a method the rules do not let through (JSON-RPC's implementation-defined server errors)
SUMMARY = 4096  # characters of a message's masked JSON kept in its recording event
MAX_IN_FLIGHT = 4096  # requests each side may have unanswered (and calls held) at once
_VERSION_META = "io.modelcontextprotocol/protocolVersion"


@dataclass(frozen=True)
class ToolCall:
    """A `tools/call` the caller decides: forward it (`forward_call`) or refuse it (`refuse_call`)."""

    id: MessageId
    action: McpTool
    body: dict[str, Any]
    progress_token: str | int | None
    revision: str


@dataclass
class Out:
    to_server: list[bytes] = field(default_factory=list)
    to_client: list[bytes] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)
    cancelled: list[MessageId] = field(default_factory=list)  # held calls the client withdrew


@dataclass(frozen=True)
class _Pending:
    method: str
    tool: str | None
    started: float


class McpInspector:
    """The messages of one MCP session with one declared server."""

    def __init__(
        self,
        server: str,
        method_decision: Callable[[str], Decision],
        hides_tool: Callable[[str], bool],
        mask: Callable[[Any], Any],
        clock: Callable[[], float],
        max_message: int,
    ) -> None:
        self.server = server
        self._method_decision = method_decision
        self._hides_tool = hides_tool
        self._mask = mask
        self._clock = clock
        self._max = max_message
        self.revision = ""  # from initialize, or a request's _meta under 2026-07-28
        self._from_client: dict[MessageId, _Pending] = {}  # the client's requests the server has not answered
        self._from_server: dict[MessageId, _Pending] = {}  # the server's requests the client has not answered
        self._held: set[MessageId] = set()  # tool calls being decided
        self.calls = 0  # tools/call requests seen

    # Client -> server ------------------------------------------------------------------------------

    def from_client(self, data: bytes) -> Out:
        out = Out()
        parsed = parse(data, self._max)
        if isinstance(parsed, Malformed):
            return self._malformed(parsed, "client", out, reply=True)
        message = parsed
        self._note_revision(message)
        if message.kind in ("response", "error"):
            return self._client_response(message, out)
        if message.kind == "request" and len(self._from_client) + len(self._held) >= MAX_IN_FLIGHT:
            busy = Malformed(
                INVALID_REQUEST, f"more than {MAX_IN_FLIGHT} requests unanswered", message.id, message.size
            )
            return self._malformed(busy, "client", out, reply=True, method=message.method)
        if message.method == "tools/call" and message.kind == "request":
            return self._tool_call(message, out)
        if message.method == "notifications/cancelled":
            request_id = message.params.get("requestId")
            if isinstance(request_id, str | int) and request_id in self._held:
                self._held.discard(request_id)
                out.cancelled.append(request_id)
                out.events.append(self._event("client", message, note="withdrew a held call"))
                return out
        decision = self._method_decision(message.method)
        if not decision.allowed:
            out.events.append(self._event("client", message, decision=decision))
            if message.kind == "request":
                text = _refusal(decision)
                out.to_client.append(encode(error_response(message.id, DENIED, text)))
            return out
        if message.kind == "request" and message.id is not None:
            self._from_client[message.id] = _Pending(message.method, None, self._clock())
        out.events.append(self._event("client", message))
        out.to_server.append(data)
        return out

    def _tool_call(self, message: Message, out: Out) -> Out:
        assert message.id is not None
        name, arguments = message.params.get("name"), message.params.get("arguments", {})
        if not isinstance(name, str) or not name or not isinstance(arguments, dict):
            failure = Malformed(INVALID_PARAMS, "expected params.name (a string) and params.arguments (an object)")
            return self._malformed(failure, "client", out, reply=True, message_id=message.id, method=message.method)
        self.calls += 1
        meta = message.params.get("_meta")
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        progress = token if isinstance(token, str | int) and not isinstance(token, bool) else None
        self._held.add(message.id)
        out.calls.append(
            ToolCall(message.id, McpTool(name, arguments, self.server), message.body, progress, self.revision)
        )
        return out

    def forward_call(self, call: ToolCall) -> Out:
        """The call is allowed (now or once approved): it goes to the server."""
        out = Out()
        if call.id not in self._held:
            return out  # withdrawn meanwhile
        self._held.discard(call.id)
        self._from_client[call.id] = _Pending("tools/call", call.action.tool, self._clock())
        out.events.append(self._call_event(call))
        out.to_server.append(encode(call.body))
        return out

    def refuse_call(self, call: ToolCall, text: str) -> Out:
        """The call is denied (by a rule, an approver, expiry): the client gets an error result naming why."""
        out = Out()
        if call.id not in self._held:
            return out
        self._held.discard(call.id)
        result: dict[str, Any] = {"content": [{"type": "text", "text": f"bastion: {text}"}], "isError": True}
        if call.revision == LATEST:
            result["resultType"] = "complete"
        out.events.append(self._call_event(call, refused=text))
        out.to_client.append(encode({"jsonrpc": "2.0", "id": call.id, "result": result}))
        return out

    def waiting(self, call: ToolCall, text: str, step: int) -> Out:
        """A held call's progress notification (only when the request carried a progress token)."""
        out = Out()
        if call.progress_token is None or call.id not in self._held:
            return out
        params = {"progressToken": call.progress_token, "progress": step, "message": f"bastion: {text}"}
        out.to_client.append(encode({"jsonrpc": "2.0", "method": "notifications/progress", "params": params}))
        return out

    def _client_response(self, message: Message, out: Out) -> Out:
        assert message.id is not None
        pending = self._from_server.pop(message.id, None)
        if pending is None:
            out.events.append(self._event("client", message, note="a response to no request of the server: dropped"))
            return out
        out.events.append(self._event("client", message, method=pending.method, started=pending.started))
        out.to_server.append(encode(message.body))  # the client's own answer, as sent (recorded masked)
        return out

    # Server -> client ------------------------------------------------------------------------------

    def from_server(self, data: bytes) -> Out:
        out = Out()
        parsed = parse(data, self._max)
        if isinstance(parsed, Malformed):
            return self._malformed(parsed, "server", out, reply=False)
        message = parsed
        body = message.body
        if message.kind in ("response", "error"):
            assert message.id is not None
            pending = self._from_client.pop(message.id, None)
            if pending is None:
                out.events.append(self._event("server", message, note="a response to no request: dropped"))
                return out
            if pending.method == "tools/list" and message.kind == "response":
                body = self._listed(body)
            masked = self._mask_body(body)
            out.events.append(
                self._event(
                    "server", message, method=pending.method, tool=pending.tool, started=pending.started, shown=masked
                )
            )
            out.to_client.append(encode(masked))
            return out
        if message.kind == "request":
            assert message.id is not None
            if len(self._from_server) >= MAX_IN_FLIGHT:
                out.events.append(
                    self._event("server", message, note=f"over {MAX_IN_FLIGHT} requests unanswered: dropped")
                )
                return out
            self._from_server[message.id] = _Pending(message.method, None, self._clock())
        masked = self._mask_body(body)
        out.events.append(self._event("server", message, shown=masked))
        out.to_client.append(encode(masked))
        return out

    def _listed(self, body: dict[str, Any]) -> dict[str, Any]:
        result = body.get("result")
        if not isinstance(result, dict) or not isinstance(result.get("tools"), list):
            return body
        tools = [t for t in result["tools"] if not (isinstance(t, dict) and self._hides_tool(str(t.get("name", ""))))]
        return {**body, "result": {**result, "tools": tools}}

    # Shared ----------------------------------------------------------------------------------------

    def refuse_malformed(self, failure: Malformed, direction: str) -> Out:
        """A message the transport could not even frame (a line over the limit): recorded; the client is told."""
        return self._malformed(failure, direction, Out(), reply=direction == "client")

    def _mask_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """Every string value masked; the envelope (jsonrpc, id, method) and all types unchanged."""
        masked = dict(body)
        for key in ("params", "result", "error"):
            if key in masked:
                masked[key] = self._mask(masked[key])
        return masked

    def _note_revision(self, message: Message) -> None:
        if message.method == "initialize":
            version = message.params.get("protocolVersion")
            if isinstance(version, str):
                self.revision = version[:32]
            return
        meta = message.params.get("_meta")
        if isinstance(meta, dict) and isinstance(meta.get(_VERSION_META), str):
            self.revision = meta[_VERSION_META][:32]

    def _malformed(
        self,
        failure: Malformed,
        direction: str,
        out: Out,
        reply: bool,
        message_id: MessageId | None = None,
        method: str | None = None,
    ) -> Out:
        reply_id = message_id if message_id is not None else failure.id
        out.events.append(
            {
                "dir": direction,
                "server": self.server,
                "method": method,
                "id": reply_id,
                "error": failure.reason,
                "size": failure.size,
                "effect": "refused",
            }
        )
        if reply:
            out.to_client.append(encode(error_response(reply_id, failure.code, f"bastion: {failure.reason}")))
        return out

    def _call_event(self, call: ToolCall, refused: str | None = None) -> dict[str, Any]:
        event = {
            "dir": "client",
            "server": self.server,
            "method": "tools/call",
            "id": call.id,
            "tool": call.action.tool,
            "arguments": _summary(self._mask(dict(call.action.arguments))),
            "size": len(encode(call.body)),
        }
        if refused is not None:
            event["effect"] = "refused"
            event["error"] = refused
        return event

    def _event(
        self,
        direction: str,
        message: Message,
        *,
        method: str | None = None,
        tool: str | None = None,
        started: float | None = None,
        shown: dict[str, Any] | None = None,
        decision: Decision | None = None,
        note: str | None = None,
    ) -> dict[str, Any]:
        event: dict[str, Any] = {
            "dir": direction,
            "server": self.server,
            "method": method or message.method or None,
            "id": message.id,
            "kind": message.kind,
            "size": message.size,
        }
        if tool is not None:
            event["tool"] = tool
        if started is not None:
            event["latency_ms"] = round((self._clock() - started) * 1000, 3)
        body = shown if shown is not None else (self._mask_body(message.body) if direction == "client" else None)
        if body is not None:
            for key in ("params", "result", "error"):
                if key in body:
                    event[key] = _summary(body[key])
        if decision is not None:
            event["effect"] = decision.effect
            event["rule"] = decision.rule
            event["error"] = _refusal(decision)
        if note is not None:
            event["note"] = note
        return event


def _refusal(decision: Decision) -> str:
    if decision.rule is None:
        return f"denied: {decision.message}"
    return f"denied by rule {decision.rule}: {decision.message}"


def _summary(value: Any) -> str:
    """Masked JSON, cut to SUMMARY characters (the event's `size` gives the whole message's size)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= SUMMARY else text[:SUMMARY] + "…"
