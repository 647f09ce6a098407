"""Staged bytes carried inside an exported journal file (``plutosync export``).

An export is one SQLite file; the blobs of the files it still has to deliver travel in its
``export_blobs`` table, in parts of ``PART`` bytes (SQLite caps one value at 1 GB), so a push
of that file elsewhere needs nothing else::

    n, size = carry(source_journal, export_connection)     # at export
    with open_blob(j, sha) as f: f.read(...)               # at push (staged.open_blob)
"""

from __future__ import annotations

import sqlite3
from typing import Any

from pluto_offline.journal.store import Journal

TABLE = "export_blobs"
PART = 8 << 20


def _has_table(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                        (TABLE,)).fetchone() is not None


def has_blob(j: Journal, sha: str) -> bool:
    return _has_table(j.conn) and j.conn.execute(
        f"SELECT 1 FROM {TABLE} WHERE sha = ? LIMIT 1", (sha,)).fetchone() is not None


def carry(src: Journal, dest: sqlite3.Connection) -> tuple[int, int]:
    """Copy the blobs of ``src``'s files not delivered yet into ``dest`` (the export's
    connection); returns ``(blobs, bytes)``. A blob missing from ``src`` is left out: its
    file then fails to deliver with that reason, as it would from ``src``."""
    from pluto_offline.journal import filerows, staged

    if not filerows.has_files(src):
        return 0, 0
    shas = [r[0] for r in src.conn.execute(
        "SELECT DISTINCT f.blob FROM files f LEFT JOIN file_delivery d ON d.id = f.id "
        "WHERE f.blob IS NOT NULL AND f.lost IS NULL "
        "AND coalesce(d.state, '') NOT IN ('done', 'rejected')")]
    dest.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (sha TEXT NOT NULL, part INTEGER NOT NULL, "
                 "data BLOB NOT NULL, PRIMARY KEY (sha, part))")
    total = 0
    n = 0
    for sha in shas:
        try:
            f = open(staged.blob_path(src.dir, sha), "rb")
        except FileNotFoundError:
            continue
        with f:
            dest.execute("BEGIN")
            part = 0
            while piece := f.read(PART):
                dest.execute(f"INSERT OR REPLACE INTO {TABLE} (sha, part, data) VALUES (?, ?, ?)",
                             (sha, part, piece))
                part += 1
                total += len(piece)
            dest.execute("COMMIT")
        n += 1
    return n, total


class BlobReader:
    """A read-only file over a carried blob's parts (holds one part in memory at a time)."""

    def __init__(self, j: Journal, sha: str) -> None:
        self.j, self.sha = j, sha
        self.part = 0
        self.buf = memoryview(b"")

    def __len__(self) -> int:  # what an HTTP client sends as Content-Length
        row = self.j.conn.execute(f"SELECT coalesce(sum(length(data)), 0) FROM {TABLE} "
                                  "WHERE sha = ?", (self.sha,)).fetchone()
        return int(row[0])

    def read(self, size: int = -1) -> bytes:
        out = bytearray()
        while size < 0 or len(out) < size:
            if not self.buf:
                row = self.j.conn.execute(f"SELECT data FROM {TABLE} WHERE sha = ? AND part = ?",
                                          (self.sha, self.part)).fetchone()
                if row is None:
                    break
                self.part += 1
                self.buf = memoryview(row[0])
            take = len(self.buf) if size < 0 else min(len(self.buf), size - len(out))
            out += self.buf[:take]
            self.buf = self.buf[take:]
        return bytes(out)

    def close(self) -> None:
        self.buf = memoryview(b"")

    def __enter__(self) -> BlobReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
