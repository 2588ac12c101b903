"""Recorded events: the vocabulary shared by the recorder, the store and the exports."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# Event types of a session recording. Byte-carrying types hold raw (masked) bytes in
# `data`; the others hold a UTF-8 JSON object.
STDOUT = "stdout"  # bytes the target wrote to stdout (or the pty)
STDERR = "stderr"  # bytes the target wrote to stderr
INPUT = "input"  # {"bytes": n}: size of what the client sent; keystrokes are not kept
PTY = "pty"  # {"term": "xterm", "cols": 80, "rows": 24}
RESIZE = "resize"  # {"cols": 120, "rows": 40}
SHELL = "shell"  # {}
EXEC = "exec"  # {"command": "ls -l"}
SUBSYSTEM = "subsystem"  # {"name": "sftp"}
ENV = "env"  # {"name": "LANG", "value": "C.UTF-8"} (only allow-listed names)
SIGNAL = "signal"  # {"name": "INT"}
BREAK = "break"  # {"msec": 0}
EOF_ = "eof"  # {"from": "client" | "target"}
TRANSFER = "transfer"  # {"op": "read"|"write", "path": "/x", "bytes": n, "protocol": "sftp"}
EXIT = "exit"  # {"status": 3} or {"signal": "TERM", "core_dumped": false, "message": ""}
DECISION = "decision"  # {"action": "exec", "text": "rm -rf /", "effect": "deny", "rule": "no-rm", ...}
APPROVAL = "approval"  # {"request": 3, "status": "approved", "by": ["bob"]}
MARKER = "marker"  # {"text": "..."}: anything worth a note in the recording
MCP = "mcp"  # {"dir": "client"|"server", "server", "method", "id", "tool", "params"|"result"|"error" (masked), ...}

BYTE_TYPES = frozenset({STDOUT, STDERR})


@dataclass(frozen=True, slots=True)
class Event:
    """One recorded event of a session: sequence number, absolute time, type, payload."""

    session_id: str
    seq: int
    ts: float  # seconds since the Unix epoch
    type: str
    data: bytes = b""

    def fields(self) -> dict[str, Any]:
        """The JSON payload of a structured event ({} for byte events)."""
        if self.type in BYTE_TYPES or not self.data:
            return {}
        value = json.loads(self.data)
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True, slots=True)
class ChainedEvent(Event):
    """An event as stored: with the hash of the one before and its own."""

    prev_hash: bytes = b""
    hash: bytes = b""


def encode_fields(**values: Any) -> bytes:
    """Canonical JSON for a structured event's payload."""
    return json.dumps(values, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """Metadata of one recorded session (one SSH session channel)."""

    id: str
    connection_id: str
    user: str
    groups: tuple[str, ...]
    cert_serial: int
    cert_key_id: str
    source: str  # "addr:port" of the client
    target: str  # inventory host name
    target_address: str
    login: str
    kind: str = ""  # shell | exec | subsystem
    command: str = ""
    term: str = ""
    cols: int = 0
    rows: int = 0
    started_at: float = 0.0
    ended_at: float | None = None
    exit_status: int | None = None
    exit_signal: str | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    end_reason: str = ""
    status: str = "live"  # live | closed | interrupted
    extra: dict[str, Any] = field(default_factory=dict)
