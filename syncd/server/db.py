"""The server's SQLite file: schema, connection, one write lock.

Everything lives in ``<data dir>/pluto-server.db`` so a restarted server sees the same runs,
metrics and API keys. One connection is shared; a lock serializes all access (SQLite has one
writer anyway, and the sqlite3 module releases the GIL while a statement runs).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

DB_NAME = "pluto-server.db"

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS projects (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    next_number INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects(id),
    number INTEGER,
    name TEXT NOT NULL,
    external_id TEXT,
    status TEXT NOT NULL,
    config TEXT,
    tags TEXT NOT NULL DEFAULT '[]',
    logger_settings TEXT,
    system_metadata TEXT,
    status_metadata TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    status_updated INTEGER,
    fork_run_id INTEGER,
    fork_step INTEGER,
    running_since REAL,        -- server clock when last set RUNNING (reaper)
    heartbeat_at REAL,         -- server clock of the last heartbeat since then
    UNIQUE (project_id, external_id)
);
CREATE INDEX IF NOT EXISTS runs_by_number ON runs (project_id, number);
CREATE TABLE IF NOT EXISTS log_names (
    run_id INTEGER NOT NULL,
    log_name TEXT NOT NULL,
    log_type TEXT NOT NULL,
    PRIMARY KEY (run_id, log_name)
) WITHOUT ROWID;
-- One series per (project, run, metric name); metric rows refer to it by integer id.
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    project TEXT NOT NULL,
    run_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    UNIQUE (project, run_id, name)
);
-- value NULL means NaN (SQLite cannot store NaN; null values are never stored).
CREATE TABLE IF NOT EXISTS metrics (
    series INTEGER NOT NULL,
    step INTEGER NOT NULL,
    time INTEGER NOT NULL,
    value REAL,
    PRIMARY KEY (series, step)
) WITHOUT ROWID;
-- Points accepted per run, before deduplication: received - stored = duplicates absorbed.
CREATE TABLE IF NOT EXISTS ingest_counts (
    project TEXT NOT NULL,
    run_id INTEGER NOT NULL,
    points INTEGER NOT NULL,
    PRIMARY KEY (project, run_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS logs (
    id INTEGER PRIMARY KEY,
    project TEXT NOT NULL,
    run_id INTEGER NOT NULL,
    time INTEGER NOT NULL,
    message TEXT NOT NULL,
    line_number INTEGER,
    log_type TEXT
);
CREATE TABLE IF NOT EXISTS data (
    id INTEGER PRIMARY KEY,
    project TEXT NOT NULL,
    run_id INTEGER NOT NULL,
    time INTEGER NOT NULL,
    log_name TEXT NOT NULL,
    step INTEGER NOT NULL,
    data_type TEXT NOT NULL,
    data TEXT NOT NULL
);
"""


def hash_key(key: str) -> str:
    """Keys are stored hashed: the data file never holds a usable key."""
    return hashlib.sha256(key.encode()).hexdigest()


def now_ms() -> int:
    return int(time.time() * 1000)


class Database:
    """The shared connection and its lock.

    >>> db = Database("/tmp/some-dir")  # doctest: +SKIP
    >>> with db.transaction() as conn:  # doctest: +SKIP
    ...     conn.execute("SELECT 1")
    """

    def __init__(self, data_dir: str) -> None:
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
        self.path = os.path.join(data_dir, DB_NAME)
        _private(self.path)
        self.lock = threading.RLock()
        self.conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL: durable across a server crash (WAL), only an OS crash can lose the tail.
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA busy_timeout=10000")
        self.conn.execute("PRAGMA cache_size=-65536")
        self.conn.executescript(SCHEMA)
        self._key_hashes = {r[0] for r in self.conn.execute("SELECT key_hash FROM api_keys")}

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Hold the lock for one write transaction; roll back on any exception."""
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def query(self, sql: str, params: tuple | list = ()) -> list[tuple]:
        with self.lock:
            return self.conn.execute(sql, params).fetchall()

    # --- API keys -------------------------------------------------------------------------
    def has_keys(self) -> bool:
        return bool(self._key_hashes)

    def add_key(self, key: str) -> None:
        digest = hash_key(key)
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO api_keys (key_hash, created_at) VALUES (?, ?)",
                (digest, now_ms()),
            )
        self._key_hashes.add(digest)

    def key_is_valid(self, key: str) -> bool:
        return hash_key(key) in self._key_hashes

    def close(self) -> None:
        with self.lock:
            self.conn.close()


def _private(path: str) -> None:
    """Create the database file 0600 whatever the umask (it holds the keys' hashes, and the
    runs); SQLite gives its -wal / -shm files the same mode. An older, wider file is narrowed."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    for name in (path, path + "-wal", path + "-shm"):
        try:
            if os.stat(name).st_mode & 0o077:
                os.chmod(name, 0o600)
        except OSError:  # absent, or not ours to change: SQLite says if it cannot open it
            pass
