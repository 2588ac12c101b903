"""The store's tables in SQLite: sessions and their events, the audit log, seals, tombstones, checkpoints,
certificates, revocations, and approvals. The statements that read and write them are portable (`?`
parameters, "user" quoted); this DDL is SQLite's, and a PostgreSQL backend has its own
(docs/design/0007-storage.md)."""

from __future__ import annotations

from bastion.storage import approvals

EVIDENCE = [
    """CREATE TABLE IF NOT EXISTS sessions (
        id TEXT PRIMARY KEY, connection_id TEXT, "user" TEXT, groups TEXT, cert_serial INTEGER,
        cert_key_id TEXT, source TEXT, target TEXT, target_address TEXT, login TEXT, kind TEXT,
        command TEXT, term TEXT, cols INTEGER, rows INTEGER, started_at REAL, ended_at REAL,
        exit_status INTEGER, exit_signal TEXT, bytes_in INTEGER, bytes_out INTEGER,
        end_reason TEXT, status TEXT, extra TEXT)""",
    """CREATE TABLE IF NOT EXISTS events (
        session_id TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL, type TEXT NOT NULL,
        data BLOB, prev_hash BLOB NOT NULL, hash BLOB NOT NULL, PRIMARY KEY (session_id, seq))""",
    """CREATE TABLE IF NOT EXISTS audit_log (
        seq INTEGER PRIMARY KEY, ts REAL NOT NULL, type TEXT NOT NULL, fields TEXT NOT NULL,
        leaf_hash BLOB NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS seals (
        session_id TEXT PRIMARY KEY, body TEXT NOT NULL, signature TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS tombstones (
        session_id TEXT PRIMARY KEY, body TEXT NOT NULL, signature TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS checkpoints (
        size INTEGER PRIMARY KEY, root BLOB NOT NULL, note TEXT NOT NULL, ts REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS certificates (
        serial INTEGER PRIMARY KEY, "user" TEXT NOT NULL, groups TEXT NOT NULL, key_id TEXT,
        principals TEXT, valid_after REAL, valid_before REAL, fingerprint TEXT, issuer TEXT,
        source TEXT, issued_at REAL, revoked_at REAL)""",
    """CREATE TABLE IF NOT EXISTS user_revocations ("user" TEXT PRIMARY KEY, revoked_at REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS sessions_started ON sessions (started_at)",
]
SCHEMA = [*EVIDENCE, *approvals.SCHEMA]
