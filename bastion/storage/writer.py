"""One writer thread that commits queued writes in batches: each batch is one transaction.

The event loop only ever appends to a queue; `flush_interval` bounds how long a write waits for its
batch. One write that raises fails alone and whole (a savepoint undoes its statements; its future gets
the exception, and the failure is logged); the rest of the batch commits.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from bastion.logs import log

T = TypeVar("T")
_STOP = object()
BATCH_LIMIT = 5000  # writes per transaction at most


class BatchWriter:
    """Runs `op(connection)` for each submitted write on its own thread, many per transaction."""

    def __init__(self, conn: sqlite3.Connection, flush_interval: float) -> None:
        self._conn = conn
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._flush_interval = flush_interval
        self._outstanding = 0  # writes submitted and not yet committed (flush waits for 0)
        self._outstanding_lock = threading.Lock()
        self._thread = threading.Thread(target=self._write_loop, name="store-writer", daemon=True)
        self._thread.start()

    def submit(self, op: Callable[[sqlite3.Connection], T]) -> Future[T]:
        """Queue a write; the writer thread runs it in its next batch and resolves the future."""
        done: Future[T] = Future()
        with self._outstanding_lock:
            self._outstanding += 1
        self._queue.put((op, done))
        return done

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything queued so far, and what its completion queued (seals), is committed."""
        deadline = time.monotonic() + timeout
        while True:
            self.submit(lambda c: None).result(max(0.1, deadline - time.monotonic()))
            with self._outstanding_lock:
                if self._outstanding == 0:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError("the store did not commit within the flush timeout")

    def stop(self) -> None:
        """Commit what is queued, then end the thread and close the connection."""
        self._queue.put(_STOP)
        self._thread.join(timeout=10)
        self._conn.close()

    def _write_loop(self) -> None:
        conn = self._conn
        stopping = False
        while not stopping:
            batch = [self._queue.get()]
            deadline = time.monotonic() + self._flush_interval
            while True:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
                if len(batch) >= BATCH_LIMIT:
                    break
            stopping = any(item is _STOP for item in batch)
            items = [item for item in batch if item is not _STOP]
            self._commit(conn, items)

    def _commit(
        self, conn: sqlite3.Connection, items: list[tuple[Callable[[sqlite3.Connection], Any], Future[Any]]]
    ) -> None:
        if not items:
            return
        errors: dict[int, BaseException] = {}
        results: dict[int, Any] = {}
        try:
            conn.execute("BEGIN IMMEDIATE")
            for index, (op, _) in enumerate(items):
                conn.execute("SAVEPOINT write")  # a write is all or nothing, whatever its statements
                try:
                    results[index] = op(conn)
                except Exception as exc:  # one bad write must not lose the rest of the batch
                    conn.execute("ROLLBACK TO write")
                    errors[index] = exc
                    log("store.write_failed", error=repr(exc))  # also for writes whose caller keeps no future
                conn.execute("RELEASE write")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            errors = dict.fromkeys(range(len(items)), exc)
        with self._outstanding_lock:  # before the futures resolve: a flush that wakes sees the truth
            self._outstanding -= len(items)
        for index, (_, done) in enumerate(items):
            if index in errors:
                done.set_exception(errors[index])
            else:
                done.set_result(results.get(index))
