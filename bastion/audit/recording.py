"""The recording of one session: sequence-numbered events with absolute timestamps."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from bastion.audit import events as ev
from bastion.audit.events import Event, SessionInfo
from bastion.audit.store import Store
from bastion.logs import log


class SessionRecording:
    """Appends a session's events to the store; the store commits them in batches."""

    def __init__(self, store: Store, info: SessionInfo) -> None:
        self.store = store
        self.info = info
        self.seq = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.closed = False
        store.put_session(info)

    @property
    def id(self) -> str:
        return self.info.id

    def record(self, type_: str, data: bytes = b"") -> None:
        if self.closed:
            return
        self.seq += 1
        self.store.append_events([Event(self.info.id, self.seq, time.time(), type_, data)])

    def note(self, type_: str, **fields: Any) -> None:
        self.record(type_, ev.encode_fields(**fields))

    def output(self, data: bytes, stderr: bool = False) -> None:
        self.bytes_out += len(data)
        self.record(ev.STDERR if stderr else ev.STDOUT, data)

    def input(self, size: int) -> None:
        self.bytes_in += size
        self.note(ev.INPUT, bytes=size)

    def describe(self, **fields: Any) -> None:
        """Update metadata learnt after the start (kind, command, terminal)."""
        self.info = dataclasses.replace(self.info, **fields)
        self.store.update_session(self.info.id, **fields)

    def close(self, reason: str, exit_status: int | None = None, exit_signal: str | None = None) -> None:
        if self.closed:
            return
        if exit_status is not None:
            self.note(ev.EXIT, status=exit_status)
        elif exit_signal is not None:
            self.note(ev.EXIT, signal=exit_signal)
        self.closed = True
        fields: dict[str, Any] = {
            "ended_at": time.time(),
            "exit_status": exit_status,
            "exit_signal": exit_signal,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "end_reason": reason,
            "status": "closed",
        }
        self.info = dataclasses.replace(self.info, **fields)
        self.store.update_session(self.info.id, **fields)
        log(
            "session.end",
            session=self.info.id,
            user=self.info.user,
            target=self.info.target,
            reason=reason,
            exit_status=exit_status,
            exit_signal=exit_signal,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
        )
