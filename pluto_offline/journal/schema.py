"""The journal's tables, its schema version and the forward migrations (docs/journal.md).

A journal written by an older version is upgraded in place when opened for writing
(``MIGRATIONS[n]`` takes schema n to n + 1, in one transaction); one written by a newer
version is refused with :class:`JournalVersionError`.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path

from pluto_offline.journal.errors import JournalError, JournalVersionError

SCHEMA_VERSION = 4

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    key        INTEGER PRIMARY KEY,
    project    TEXT NOT NULL,
    run_id     TEXT NOT NULL,
    ref_kind   TEXT NOT NULL DEFAULT 'external',
    name       TEXT,
    created_at INTEGER NOT NULL,
    config     TEXT NOT NULL DEFAULT '{}',
    tags       TEXT NOT NULL DEFAULT '[]',
    UNIQUE (project, ref_kind, run_id)
);
CREATE TABLE IF NOT EXISTS events (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    run     INTEGER NOT NULL REFERENCES runs(key),
    kind    TEXT NOT NULL,
    time    INTEGER NOT NULL,
    step    INTEGER,
    payload TEXT
);
CREATE INDEX IF NOT EXISTS events_run_seq ON events (run, seq);
CREATE TABLE IF NOT EXISTS writers (
    id        TEXT PRIMARY KEY,
    run       INTEGER NOT NULL REFERENCES runs(key),
    pid       INTEGER NOT NULL,
    host      TEXT NOT NULL,
    opened_at INTEGER NOT NULL,
    ended_at  INTEGER,
    ended_how TEXT,
    folded    INTEGER NOT NULL DEFAULT 0  -- last spill record number folded into events
);
CREATE INDEX IF NOT EXISTS writers_run ON writers (run);
CREATE TABLE IF NOT EXISTS delivery (
    run        INTEGER PRIMARY KEY REFERENCES runs(key),
    server_id  INTEGER,
    display_id TEXT,
    number     INTEGER,
    url        TEXT,
    acked_seq  INTEGER NOT NULL DEFAULT 0,
    sent_seq   INTEGER NOT NULL DEFAULT 0,
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    next_try   REAL,
    conflict   TEXT,
    updated_at INTEGER,
    reassert_due   REAL,  -- wall time (s) to send the run's final state again, or NULL
    reassert_kinds TEXT,  -- what to re-assert: comma-separated config, tags, status
    resent     INTEGER NOT NULL DEFAULT 0  -- string-series records sent again unanswered
);
CREATE TABLE IF NOT EXISTS rejected (
    seq    INTEGER PRIMARY KEY,
    run    INTEGER NOT NULL REFERENCES runs(key),
    kind   TEXT NOT NULL,
    code   INTEGER,
    reason TEXT NOT NULL,
    at     INTEGER NOT NULL
);
"""

_FILES_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    run          INTEGER NOT NULL REFERENCES runs(key),
    writer       TEXT,              -- the writer that logged it: its process stages it
    after_seq    INTEGER NOT NULL,  -- events.seq when journaled: a later status waits for it
    log_name     TEXT NOT NULL,
    file_name    TEXT NOT NULL,     -- unique per (run, log_name), extension included
    file_type    TEXT NOT NULL,     -- the extension without its dot (png, wav, pt...)
    kind         TEXT NOT NULL,     -- IMAGE, AUDIO, VIDEO, TEXT, FILE or ARTIFACT
    content_type TEXT NOT NULL,
    step         INTEGER NOT NULL,
    time         INTEGER NOT NULL,
    sample_index INTEGER NOT NULL DEFAULT 0,
    caption      TEXT,
    source       TEXT NOT NULL,     -- JSON: where the bytes come from until staged
    blob         TEXT,              -- sha256 of the staged bytes, NULL until staged
    size         INTEGER,           -- bytes of the blob
    lost         TEXT               -- why it can never be delivered
);
CREATE INDEX IF NOT EXISTS files_run ON files (run, id);
CREATE TABLE IF NOT EXISTS file_delivery (
    id           INTEGER PRIMARY KEY REFERENCES files(id),
    state        TEXT NOT NULL,     -- presigning, presigned, done, rejected, unsent
    url          TEXT,              -- the presigned PUT URL (until done)
    presigned_at INTEGER,           -- ms
    resent       INTEGER NOT NULL DEFAULT 0,  -- presigned again after an unanswered presign
    reason       TEXT
);
"""

# Forward migrations: MIGRATIONS[n] upgrades a schema-n journal to n + 1.
MIGRATIONS: dict[int, str] = {
    # 2: the daemon's re-assert note survives a restart (docs/journal.md, "delivery")
    1: "ALTER TABLE delivery ADD COLUMN reassert_due REAL;"
       "ALTER TABLE delivery ADD COLUMN reassert_kinds TEXT",
    # 3: records the server does not deduplicate, sent again after an unanswered request
    2: "ALTER TABLE delivery ADD COLUMN resent INTEGER NOT NULL DEFAULT 0",
    # 4: logged files (staged bytes) and their delivery (docs/media.md)
    3: _FILES_SCHEMA,
}


def _ensure_schema(conn: sqlite3.Connection, file: Path, *, readonly: bool) -> None:
    version = _schema_version(conn)
    if version is not None and version > SCHEMA_VERSION:
        raise JournalVersionError(
            f"journal {file} has schema version {version}, written by a newer pluto-offline; "
            f"this version reads schema {SCHEMA_VERSION} and older. "
            "Upgrade: pip install -U pluto-offline"
        )
    if version == SCHEMA_VERSION or readonly:
        if version is None:
            raise JournalError(f"{file} is not a pluto-offline journal (no meta table)")
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _schema_version(conn)  # another process may have won the race
        if version is None:
            foreign = [r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name LIMIT 5")]
            if foreign:  # someone else's database: never add our tables to it
                raise JournalError(
                    f"{file} is not a pluto-offline journal (no meta table; it holds "
                    f"{', '.join(foreign)}): choose another directory with dir= / PLUTO_DIR")
            _run_script(conn, _SCHEMA)
            _run_script(conn, _FILES_SCHEMA)
            conn.executemany(
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                [
                    ("journal_id", uuid.uuid4().hex),
                    ("schema_version", str(SCHEMA_VERSION)),
                    ("created_at", str(int(time.time() * 1000))),
                ],
            )
        else:
            while version < SCHEMA_VERSION:
                _run_script(conn, MIGRATIONS[version])
                version += 1
            conn.execute(
                "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),)
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    # executescript() would COMMIT the open transaction first; run statement by statement.
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _schema_version(conn: sqlite3.Connection) -> int | None:
    has_meta = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if not has_meta:
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else None
