"""Storage: the one interface every part of the bastion reads and writes through (interface.py), and its
SQLite implementation (sqlite.py, the embedded default). Every SQL statement of the bastion is in this package."""

from __future__ import annotations

from pathlib import Path

from bastion.storage.interface import Store
from bastion.storage.sqlite import SqliteStore

__all__ = ["SqliteStore", "Store", "open_store"]


def open_store(path: Path, flush_interval: float = 0.05) -> Store:
    """The configured store: SQLite at `path` (the only backend so far)."""
    return SqliteStore(path, flush_interval)
