"""The one storage interface: what the bastion, its commands and the TUI read and write, and nothing else.

Writes return at once (queued for the writer, committed in order, in batches); a write whose result
or commit matters returns a Future. Reads see what is committed. A second backend (PostgreSQL)
implements this Protocol; see docs/design/0007-storage.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any, Protocol, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bastion.audit.events import ChainedEvent, Event, SessionInfo
from bastion.control.approvals import ApprovalRequest
from bastion.storage.approvals import ApprovalTables

__all__ = ["Store"]

T = TypeVar("T")


class Store(Protocol):
    """Sessions and their events, seals and tombstones, the audit log and its checkpoints, certificates and
    revocations, approval requests and grant windows."""

    # Sessions and their events.
    def put_session(self, info: SessionInfo) -> None: ...

    def update_session(self, session_id: str, **fields: Any) -> None: ...

    def append_events(self, events: list[Event]) -> None:
        """Queue events in order; the writer chains them (each hash covers the one before) and stores them."""
        ...

    def insert_events(self, events: list[ChainedEvent]) -> None:
        """Store events exactly as given, hashes included (imports and tests)."""
        ...

    def chain_head(self, session_id: str, forget: bool = False) -> Future[bytes]:
        """The hash of the session's last event queued so far, once the writer has chained it."""
        ...

    def put_seal(self, session_id: str, body: dict[str, Any], signature: str, table: str = "seals") -> None: ...

    def prune_events(self, session_id: str, tombstone: dict[str, Any], signature: str) -> Future[None]:
        """Replace a sealed session's events with a signed tombstone, in one transaction (retention)."""
        ...

    def sessions(self, live: bool | None = None, limit: int = 1000) -> list[SessionInfo]: ...

    def session(self, session_id: str) -> SessionInfo | None:
        """By id, or by a prefix that names one session."""
        ...

    def session_ids(self) -> list[str]: ...

    def events(self, session_id: str) -> Iterator[ChainedEvent]: ...

    def last_event(self, session_id: str) -> tuple[int, bytes, float | None]: ...

    def seal(self, session_id: str, table: str = "seals") -> tuple[dict[str, Any], str] | None: ...

    # The audit log.
    def log(self, type_: str, **fields: Any) -> Future[None]:
        """Append an entry; its index is taken in the write transaction, so processes share one log."""
        ...

    def audit_log(self, type_: str | None = None) -> list[dict[str, Any]]: ...

    def audit_entries(self) -> Iterator[dict[str, Any]]: ...

    def checkpoint(self, origin: str, signer: Ed25519PrivateKey) -> Future[None]:
        """Sign a checkpoint of the audit log if it grew since the last one."""
        ...

    def checkpoints(self) -> list[dict[str, Any]]: ...

    # Certificates and revocations.
    def record_certificate(self, row: dict[str, Any]) -> Future[Any]: ...

    def certificate(self, serial: int) -> dict[str, Any] | None: ...

    def revoke(self, serial: int | None = None, user: str | None = None) -> Future[list[dict[str, Any]]]: ...

    def revoked_since(self, since: float) -> list[dict[str, Any]]: ...

    def user_revoked_at(self, user: str) -> float | None: ...

    # Approvals.
    def approvals_write(self, op: Callable[[ApprovalTables], T]) -> Future[T]:
        """Run `op` on the approval tables inside one write transaction (read, check and write atomically)."""
        ...

    def approval(self, request_id: int) -> ApprovalRequest | None: ...

    def approval_requests(self, pending_only: bool, now: float, limit: int) -> list[ApprovalRequest]: ...

    def grant_active(self, user: str, host: str, login: str, key: str, now: float) -> bool: ...

    # Lifecycle.
    def flush(self, timeout: float = 10.0) -> None:
        """Block until everything queued so far, and what its completion queued, is committed."""
        ...

    def close(self) -> None: ...
