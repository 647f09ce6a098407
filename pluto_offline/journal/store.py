"""Opening a journal: the file, its permissions, its schema and its version."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pluto_offline.journal import forkguard
from pluto_offline.journal.errors import JournalError, JournalVersionError  # noqa: F401
from pluto_offline.journal.schema import (  # noqa: F401
    _FILES_SCHEMA,
    _SCHEMA,
    MIGRATIONS,
    SCHEMA_VERSION,
    _ensure_schema,
    _run_script,
    _schema_version,
)

JOURNAL_FILE = "journal.db"
SPILL_DIR = "spill"
SPILL_SUFFIX = ".spill"  # a writer's spill file: <spill_dir>/<writer id>.spill
BUSY_TIMEOUT_MS = 60_000

# Event kinds, in the order a run usually produces them.
EVENT_KINDS = ("create", "resume", "lognames", "metrics", "data", "config", "tags", "status", "close",
               "logs", "alert")
TERMINAL_STATUSES = ("COMPLETED", "FAILED", "TERMINATED", "CANCELLED")


def now_ms() -> int:
    return int(time.time() * 1000)


def default_dir() -> Path:
    """The journal directory when neither ``dir=`` nor ``PLUTO_DIR`` is given.

    ``$XDG_DATA_HOME/pluto-offline`` (``~/.local/share/pluto-offline`` when unset).
    """
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "pluto-offline"


def resolve_path(path: str | os.PathLike[str] | None = None) -> Path:
    """Map ``dir=`` / ``PLUTO_DIR`` / the default to the journal file's path.

    A path ending in ``.db`` (or naming an existing file) is the journal file itself; anything
    else is a directory holding ``journal.db``.
    """
    if path is None or str(path) == "":
        path = os.environ.get("PLUTO_DIR") or default_dir()
    p = Path(path).expanduser()
    if p.suffix == ".db" or p.is_file():
        return p
    return p / JOURNAL_FILE


@dataclass(frozen=True)
class Event:
    seq: int
    run: int
    kind: str
    time: int
    step: int | None
    payload: str | None

    def data(self) -> Any:
        """The payload decoded from JSON (not for ``metrics``/``data``, which are NDJSON)."""
        return None if self.payload is None else json.loads(self.payload)


@dataclass(frozen=True)
class RunRow:
    key: int
    project: str
    run_id: str
    ref_kind: str
    name: str | None
    created_at: int
    config: dict
    tags: list
    # delivery state (daemon-owned); None / 0 until the daemon has touched the run
    server_id: int | None = None
    display_id: str | None = None
    number: int | None = None
    url: str | None = None
    acked_seq: int = 0
    attempts: int = 0
    last_error: str | None = None
    next_try: float | None = None
    conflict: str | None = None
    reassert_due: float | None = None  # see delivery.note_reassert
    reassert_kinds: str | None = None

    @property
    def reassert(self) -> tuple[float, frozenset[str]] | None:
        """``(due wall time, kinds)`` of the run's pending re-assert, or None."""
        if self.reassert_due is None:
            return None
        return self.reassert_due, frozenset(k for k in (self.reassert_kinds or "").split(",") if k)


class Journal:
    """One open connection to a journal file. Not shared between threads."""

    def __init__(self, path: Path, conn: sqlite3.Connection):
        self.path = path
        self.dir = path.parent
        self.conn = conn
        self.id: str = self.meta("journal_id") or ""
        # a read-only open cannot migrate: readers of newer columns check this
        self.schema: int = int(self.meta("schema_version") or SCHEMA_VERSION)

    @classmethod
    def open(
        cls, path: str | os.PathLike[str] | None = None, *, create: bool = True, readonly: bool = False
    ) -> Journal:
        """Open (creating if needed) the journal at ``path`` (a directory or a ``.db`` file)."""
        file = resolve_path(path)
        if readonly or not create:
            if not file.exists():
                raise JournalError(
                    f"no journal at {file}: check the path (a journal directory holds {JOURNAL_FILE})"
                )
        else:
            _create_private(file)
        try:
            if readonly:
                conn = sqlite3.connect(
                    f"file:{file}?mode=ro", uri=True, isolation_level=None,
                    check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000,
                )
            else:
                conn = sqlite3.connect(
                    str(file), isolation_level=None, check_same_thread=False,
                    timeout=BUSY_TIMEOUT_MS / 1000,
                )
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            if not readonly:
                _set_wal(conn)
                conn.execute("PRAGMA synchronous=FULL")
            _ensure_schema(conn, file, readonly=readonly)
        except sqlite3.DatabaseError as exc:
            raise _explain(exc, file) from exc
        return cls(file, conn)

    @classmethod
    def peek(cls, path: str | os.PathLike[str]) -> Journal:
        """Open read-only for a quick look, leaving nothing beside the file: a read-only
        connection closing last leaves ``-wal``/``-shm`` behind, so a journal no process has
        open (no ``-wal``) is read as it is (SQLite's ``immutable`` mode); one that a process
        has open, through that process's log. Raises ``JournalError`` as :meth:`open`."""
        file = resolve_path(path)
        if os.path.exists(f"{file}-wal") or not file.exists():
            return cls.open(file, readonly=True)
        try:
            conn = sqlite3.connect(f"file:{file}?mode=ro&immutable=1", uri=True,
                                   isolation_level=None, check_same_thread=False)
            _ensure_schema(conn, file, readonly=True)
        except sqlite3.DatabaseError as exc:
            raise _explain(exc, file) from exc
        return cls(file, conn)

    @property
    def db(self) -> Any:
        """``sqlite_utils.Database`` over this connection, imported on first use: the import
        costs about 0.1 s, which neither ``import pluto_offline`` nor the console helper
        (``console/helper.py``) should pay."""
        import sqlite_utils

        return sqlite_utils.Database(self.conn)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``: take the write lock up front so writers queue
        on the busy timeout instead of failing with a deadlock on upgrade. Holds
        :func:`forkguard.lock` throughout: no transaction spans a fork."""
        with forkguard.lock():
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.DatabaseError as exc:
                raise _explain(exc, self.path) from exc
            try:
                yield self.conn
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
            else:
                try:
                    self.conn.execute("COMMIT")
                except sqlite3.DatabaseError as exc:
                    if self.conn.in_transaction:
                        self.conn.execute("ROLLBACK")
                    raise _explain(exc, self.path) from exc

    def meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    @property
    def spill_dir(self) -> Path:
        return self.dir / SPILL_DIR


def _create_private(file: Path) -> None:
    """Create the directory (0700) and the file (0600) whatever the umask.

    SQLite creates the -wal and -shm files with the database file's mode, so they follow.
    """
    d = file.parent
    if not d.exists():
        try:
            os.makedirs(d, mode=0o700, exist_ok=True)
            os.chmod(d, 0o700)
        except OSError as exc:
            raise JournalError(f"cannot create journal directory {d}: {exc.strerror}; choose "
                               "a writable directory with dir= or PLUTO_DIR") from exc
    if not file.exists():
        try:
            fd = os.open(file, os.O_CREAT | os.O_RDWR, 0o600)
            os.close(fd)
            os.chmod(file, 0o600)
        except OSError as exc:
            raise JournalError(
                f"cannot create journal {file}: {exc.strerror}; "
                "choose a writable directory with dir= or PLUTO_DIR"
            ) from exc


def _set_wal(conn: sqlite3.Connection) -> None:
    """``PRAGMA journal_mode=WAL``, retried while the database is locked.

    SQLite answers "database is locked" at once, without its busy handler, when another
    process is switching a new journal to WAL (or is the last one closing it) at that moment:
    several jobs starting together on a fresh journal meet it.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    delay = 0.001
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


def _explain(exc: sqlite3.DatabaseError, file: Path) -> JournalError:
    """Turn SQLite's terse errors into a message that says what to do."""
    msg = str(exc)
    if "not a database" in msg and file.suffix != ".db":  # named by mistake, not damaged
        return JournalError(f"{file} is not a journal ({msg}): give a journal.db, an export "
                            "(.db), or the directory holding them")
    if "not a database" in msg or "malformed" in msg:
        return JournalError(
            f"journal {file} is damaged ({msg}); move it aside and restore it from a backup "
            "or an export (plutosync export)"
        )
    if "readonly" in msg or "unable to open" in msg:
        return JournalError(
            f"journal {file} cannot be written ({msg}); check the directory's permissions "
            "or choose another with dir= / PLUTO_DIR"
        )
    if "disk" in msg or "full" in msg:
        return JournalError(f"journal {file}: the disk is full ({msg}); free some space")
    if "locked" in msg or "busy" in msg:
        return JournalError(f"journal {file} stayed locked for {BUSY_TIMEOUT_MS // 1000} s ({msg})")
    return JournalError(f"journal {file}: {msg}")

def _run_rows(j: Journal, where: str, args: tuple) -> list[RunRow]:
    sql = (
        "SELECT r.key, r.project, r.run_id, r.ref_kind, r.name, r.created_at, r.config, r.tags, "
        "d.server_id, d.display_id, d.number, d.url, coalesce(d.acked_seq, 0), "
        "coalesce(d.attempts, 0), d.last_error, d.next_try, d.conflict, "
        + ("d.reassert_due, d.reassert_kinds " if j.schema >= 2 else "NULL, NULL ")
        + f"FROM runs r LEFT JOIN delivery d ON d.run = r.key {where} ORDER BY r.key"
    )
    out = []
    for row in j.conn.execute(sql, args):
        row = list(row)
        row[6] = json.loads(row[6])
        row[7] = json.loads(row[7])
        out.append(RunRow(*row))
    return out
