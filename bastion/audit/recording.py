"""The recording of one session: hash-chained, sequence-numbered events, sealed at the end."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import Any

from bastion.audit import events as ev
from bastion.audit.events import Event, SessionInfo
from bastion.audit.seal import Sealer, seal_body, seal_digest
from bastion.logs import log
from bastion.storage import Store

COALESCE_SECONDS = 0.02  # output arriving within this window of the first chunk is one event
COALESCE_BYTES = 256 * 1024  # ... up to this size


class SessionRecording:
    """Appends a session's events to the store (committed in batches) and seals it when it ends.

    Consecutive output of one stream within COALESCE_SECONDS becomes one event, stamped with the
    time of its first byte, and input sizes are summed the same way: per-chunk events cost the
    bastion a third of its bulk throughput. An event reaches the store at most 20 ms after its
    first byte; the store commits every flush_interval (50 ms).
    """

    def __init__(self, store: Store, sealer: Sealer, info: SessionInfo) -> None:
        self.store = store
        self.sealer = sealer
        self.info = info
        self.seq = 0
        self._pending: list[list[Any]] = []  # [seq, ts, type, bytearray | byte count | bytes]
        self._pending_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.closed = False
        # secrets and personal data masked in this session, by type: asked once, when the recording closes
        self.count_maskings: Callable[[], dict[str, int]] = dict
        self.closing_extra: list[Callable[[], dict[str, Any]]] = []  # more of the session's `extra`, asked at close
        store.put_session(info)
        store.log(
            "session.start",
            session=info.id,
            user=info.user,
            target=info.target,
            login=info.login,
            source=info.source,
            serial=info.cert_serial,
        )

    @property
    def id(self) -> str:
        return self.info.id

    def record(self, type_: str, data: bytes = b"") -> None:
        if self.closed:
            return
        self.seq += 1
        self._pending.append([self.seq, time.time(), type_, data])
        self._flush_soon()

    def _coalesce(self, type_: str, data: bytes | int) -> None:
        """Add output bytes (or an input size) to the pending event of the same type, or start one."""
        if self.closed:
            return
        last = self._pending[-1] if self._pending else None
        if last is not None and last[2] == type_:
            last[3] += data
        else:
            self.seq += 1
            self._pending.append([self.seq, time.time(), type_, bytearray(data) if isinstance(data, bytes) else data])
        self._pending_bytes += len(data) if isinstance(data, bytes) else 0
        self._flush_soon()

    def _flush_soon(self) -> None:
        if self._pending_bytes >= COALESCE_BYTES:
            self.flush()
        elif self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(COALESCE_SECONDS, self.flush)
            except RuntimeError:  # no event loop (tools, tests): write through
                self.flush()

    def flush(self) -> None:
        """Hand what is pending to the store."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        events = []
        for seq, ts, type_, data in self._pending:
            if type_ == ev.INPUT:
                data = ev.encode_fields(bytes=data)
            events.append(Event(self.info.id, seq, ts, type_, bytes(data)))
        self._pending.clear()
        self._pending_bytes = 0
        self.store.append_events(events)

    def note(self, type_: str, **fields: Any) -> None:
        self.record(type_, ev.encode_fields(**fields))

    def output(self, data: bytes, stderr: bool = False) -> None:
        self.bytes_out += len(data)
        self._coalesce(ev.STDERR if stderr else ev.STDOUT, data)

    def input(self, size: int) -> None:
        self.bytes_in += size
        self._coalesce(ev.INPUT, size)

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
        self.flush()
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
        maskings = self.count_maskings()
        extra = {key: value for notes in self.closing_extra for key, value in notes().items()}
        if maskings:
            extra["maskings"] = dict(sorted(maskings.items()))
        if extra:
            fields["extra"] = {**self.info.extra, **extra}
        self.info = dataclasses.replace(self.info, **fields)
        self.store.update_session(self.info.id, **fields)
        info, count, store, sealer = self.info, self.seq, self.store, self.sealer
        # The writer thread chains events; seal once it has chained the last one.
        store.chain_head(info.id, forget=True).add_done_callback(
            lambda head: seal(store, sealer, info, count, head.result())
        )
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
            maskings=maskings,
        )


def seal(store: Store, sealer: Sealer, info: SessionInfo, events: int, head: bytes) -> None:
    """Sign the session's seal and enter its digest in the audit log."""
    body = seal_body(info, events, head)
    signature = sealer.sign(body)
    store.put_seal(info.id, body, signature)
    maskings = info.extra.get("maskings", {})
    store.log(
        "session.end",
        session=info.id,
        status=info.status,
        events=events,
        seal=seal_digest(body, signature),
        **({"maskings": maskings} if maskings else {}),
    )


def close_interrupted(store: Store, sealer: Sealer) -> list[str]:
    """Seal the sessions a killed process left live, with what was committed; return their ids."""
    closed = []
    for info in store.sessions(live=True, limit=100000):
        count, head, last_ts = store.last_event(info.id)
        sent = received = 0
        for event in store.events(info.id):  # the counters died with the process; the events did not
            if event.type in ev.BYTE_TYPES:
                sent += len(event.data)
            elif event.type == ev.INPUT:
                received += int(event.fields().get("bytes", 0))
        fields: dict[str, Any] = {
            "status": "interrupted",
            "end_reason": "bastion stopped before the session ended",
            "ended_at": last_ts or info.started_at,
            "bytes_out": sent,
            "bytes_in": received,
        }
        store.update_session(info.id, **fields)
        seal(store, sealer, dataclasses.replace(info, **fields), count, head)
        closed.append(info.id)
    store.flush()
    return closed
