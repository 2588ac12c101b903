"""JSON-RPC 2.0 messages as MCP carries them, one per stdio line or HTTP body; pure.

`parse` turns bytes into a `Message`, or a `Malformed` that says which JSON-RPC error the sender gets
and why, in one line. Batches are refused: MCP removed them in 2025-06-18.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "Malformed",
    "Message",
    "MessageId",
    "encode",
    "error_response",
    "parse",
]

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

MessageId = str | int
Kind = Literal["request", "notification", "response", "error"]


@dataclass(frozen=True)
class Message:
    """One well-formed JSON-RPC message; `body` is the whole object as received."""

    kind: Kind
    body: dict[str, Any]
    size: int

    @property
    def id(self) -> MessageId | None:
        value = self.body.get("id")
        return value if isinstance(value, str | int) and not isinstance(value, bool) else None

    @property
    def method(self) -> str:
        return str(self.body.get("method", ""))

    @property
    def params(self) -> dict[str, Any]:
        params = self.body.get("params")
        return params if isinstance(params, dict) else {}

    @property
    def result(self) -> Any:
        return self.body.get("result")

    @property
    def error(self) -> dict[str, Any] | None:
        error = self.body.get("error")
        return error if isinstance(error, dict) else None


@dataclass(frozen=True)
class Malformed:
    """Not a message the bastion passes on: the error the sender gets (with its id, when one was readable)."""

    code: int
    reason: str
    id: MessageId | None = None
    size: int = 0


def parse(data: bytes, max_size: int) -> Message | Malformed:
    size = len(data)
    if size > max_size:
        return Malformed(INVALID_REQUEST, f"message of {size} bytes is over the limit of {max_size}", size=size)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        return Malformed(PARSE_ERROR, f"not UTF-8 (byte {error.start})", size=size)
    try:
        body = json.loads(text)
    except json.JSONDecodeError as error:
        return Malformed(PARSE_ERROR, f"not JSON: {error.msg} at column {error.colno}", size=size)
    except RecursionError:
        return Malformed(PARSE_ERROR, "not JSON: nested too deeply", size=size)
    if isinstance(body, list):
        return Malformed(INVALID_REQUEST, "batches are not allowed (removed in MCP 2025-06-18)", size=size)
    if not isinstance(body, dict):
        return Malformed(INVALID_REQUEST, f"expected a JSON object, got {type(body).__name__}", size=size)
    raw_id = body.get("id")
    good_id = raw_id if isinstance(raw_id, str | int) and not isinstance(raw_id, bool) else None
    if body.get("jsonrpc") != "2.0":
        return Malformed(INVALID_REQUEST, 'expected "jsonrpc": "2.0"', good_id, size)
    if "id" in body and good_id is None:
        return Malformed(INVALID_REQUEST, "expected an id that is a string or an integer", None, size)
    if "method" in body:
        if not isinstance(body["method"], str) or not body["method"]:
            return Malformed(INVALID_REQUEST, "expected a method name (a string)", good_id, size)
        if "params" in body and not isinstance(body["params"], dict):
            return Malformed(INVALID_PARAMS, "expected params to be an object", good_id, size)
        return Message("request" if good_id is not None else "notification", body, size)
    if good_id is None:
        return Malformed(INVALID_REQUEST, "expected a method, or a response with an id", None, size)
    if ("result" in body) == ("error" in body):
        return Malformed(INVALID_REQUEST, "expected a response with exactly one of result and error", good_id, size)
    if "error" in body:
        failure = body["error"]
        if (
            not isinstance(failure, dict)
            or not isinstance(failure.get("code"), int)
            or not isinstance(failure.get("message"), str)
        ):
            return Malformed(INVALID_REQUEST, "expected an error with an integer code and a message", good_id, size)
        return Message("error", body, size)
    return Message("response", body, size)


def encode(body: dict[str, Any]) -> bytes:
    """One message as compact UTF-8 JSON (without the stdio line break)."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")


def error_response(message_id: MessageId | None, code: int, text: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": message_id, "error": {"code": code, "message": text}}
