"""The journal: one SQLite file shared by the SDK (writer) and plutosync (reader).

This module is the whole contract between the two sides; ``docs/journal.md`` describes the
format for other tools. Functions take a :class:`Journal` (a thin owner of one connection),
in the style of ``sqlite-utils``::

    j = Journal.open("/data/pluto")            # a directory (-> journal.db) or a .db file
    with j.transaction():
        key = add_run(j, project="mnist", run_id="abc", name="baseline")
        append_event(j, key, "create", payload={"config": {"lr": 0.1}, "tags": []})
    for run in runs_with_pending(j):
        events = pending_events(j, run.key, after=run.acked_seq)

Ownership: the SDK writes ``runs``, ``events`` and ``writers``; plutosync writes ``delivery``
and ``rejected``. Each side only reads the other's tables.
"""

from __future__ import annotations

import contextlib
import json
import marshal
import os
import sqlite3
import struct
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

SCHEMA_VERSION = 1
JOURNAL_FILE = "journal.db"
SPILL_DIR = "spill"
BUSY_TIMEOUT_MS = 60_000

# Event kinds, in the order a run usually produces them.
EVENT_KINDS = ("create", "resume", "lognames", "metrics", "data", "config", "tags", "status", "close")
TERMINAL_STATUSES = ("COMPLETED", "FAILED", "TERMINATED", "CANCELLED")

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
    updated_at INTEGER
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

# Forward migrations: MIGRATIONS[n] upgrades a schema-n journal to n + 1.
MIGRATIONS: dict[int, str] = {}


class JournalError(Exception):
    """A journal cannot be opened, read or written; the message says why and what to do."""


class JournalVersionError(JournalError):
    """The journal was written by a newer pluto-offline."""


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


class Journal:
    """One open connection to a journal file. Not shared between threads."""

    def __init__(self, path: Path, conn: sqlite3.Connection):
        self.path = path
        self.dir = path.parent
        self.conn = conn
        self.db = sqlite_utils.Database(conn)
        self.id: str = self.meta("journal_id") or ""

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
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
            _ensure_schema(conn, file, readonly=readonly)
        except sqlite3.DatabaseError as exc:
            raise _explain(exc, file) from exc
        return cls(file, conn)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``: take the write lock up front so writers queue
        on the busy timeout instead of failing with a deadlock on upgrade."""
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
            raise JournalError(f"cannot create journal directory {d}: {exc.strerror}") from exc
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
            _run_script(conn, _SCHEMA)
            conn.executemany(
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                [
                    ("journal_id", uuid.uuid4().hex),
                    ("schema_version", str(SCHEMA_VERSION)),
                    ("created_at", str(now_ms())),
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


def _explain(exc: sqlite3.DatabaseError, file: Path) -> JournalError:
    """Turn SQLite's terse errors into a message that says what to do."""
    msg = str(exc)
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


# --------------------------------------------------------------------------- SDK side (writes)


def add_run(
    j: Journal,
    *,
    project: str,
    run_id: str,
    name: str | None,
    ref_kind: str = "external",
    config: dict | None = None,
    tags: list[str] | None = None,
    created_at: int | None = None,
) -> int:
    """Insert a run row and return its key (call inside a transaction)."""
    cur = j.conn.execute(
        "INSERT INTO runs (project, run_id, ref_kind, name, created_at, config, tags) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            project, run_id, ref_kind, name, created_at or now_ms(),
            json.dumps(config or {}), json.dumps(tags or []),
        ),
    )
    return int(cur.lastrowid)


def find_run(j: Journal, *, project: str, run_id: str, ref_kind: str = "external") -> RunRow | None:
    """The run a (project, run_id) names, or None."""
    rows = _run_rows(j, "WHERE r.project = ? AND r.ref_kind = ? AND r.run_id = ?",
                     (project, ref_kind, run_id))
    return rows[0] if rows else None


def find_run_by_server_ref(
    j: Journal, *, server_id: int | None = None, display_id: str | None = None,
    project: str | None = None,
) -> RunRow | None:
    """A run the daemon has already created on the server, found by its server id or display id."""
    if server_id is not None:
        rows = _run_rows(j, "WHERE d.server_id = ?", (server_id,))
    else:
        rows = _run_rows(j, "WHERE upper(d.display_id) = upper(?) AND (? IS NULL OR r.project = ?)",
                         (display_id, project, project))
    return rows[0] if rows else None


def get_run(j: Journal, key: int) -> RunRow | None:
    rows = _run_rows(j, "WHERE r.key = ?", (key,))
    return rows[0] if rows else None


def append_event(
    j: Journal, run: int, kind: str, *, payload: Any = None, time: int | None = None,
    step: int | None = None, raw: bool = False,
) -> int:
    """Append one event and return its seq. ``payload`` is JSON-encoded unless ``raw``."""
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown event kind {kind!r}")
    text = payload if raw or payload is None else json.dumps(payload, allow_nan=True)
    cur = j.conn.execute(
        "INSERT INTO events (run, kind, time, step, payload) VALUES (?, ?, ?, ?, ?)",
        (run, kind, time or now_ms(), step, text),
    )
    return int(cur.lastrowid)


def append_events(j: Journal, rows: Iterable[tuple[int, str, int, int | None, str | None]]) -> None:
    """Append many ``(run, kind, time, step, payload_text)`` rows (the writer thread's path)."""
    j.conn.executemany(
        "INSERT INTO events (run, kind, time, step, payload) VALUES (?, ?, ?, ?, ?)", rows
    )


def set_run_state(j: Journal, key: int, *, config: dict | None = None, tags: list | None = None) -> None:
    """Record the run's current config / tags (what a later local resume starts from)."""
    if config is not None:
        j.conn.execute("UPDATE runs SET config = ? WHERE key = ?", (json.dumps(config), key))
    if tags is not None:
        j.conn.execute("UPDATE runs SET tags = ? WHERE key = ?", (json.dumps(tags), key))


def last_step(j: Journal, key: int) -> int | None:
    """The highest step journaled for a run (``metrics``/``data`` events carry their last step)."""
    row = j.conn.execute(
        "SELECT max(step) FROM events WHERE run = ? AND kind IN ('metrics', 'data')", (key,)
    ).fetchone()
    return row[0]


def add_writer(j: Journal, run: int, writer_id: str, pid: int, host: str) -> None:
    j.conn.execute(
        "INSERT INTO writers (id, run, pid, host, opened_at) VALUES (?, ?, ?, ?, ?)",
        (writer_id, run, pid, host, now_ms()),
    )


def end_writer(j: Journal, writer_id: str, how: str) -> None:
    """Mark a writer ended: ``how`` is a terminal status, ``closed`` or ``killed``."""
    j.conn.execute(
        "UPDATE writers SET ended_at = ?, ended_how = ? WHERE id = ? AND ended_at IS NULL",
        (now_ms(), how, writer_id),
    )


# --------------------------------------------------------------------------- daemon side


def runs_with_pending(j: Journal) -> list[RunRow]:
    """Runs that have events after their acknowledged seq, oldest first."""
    return _run_rows(
        j,
        "WHERE EXISTS (SELECT 1 FROM events e WHERE e.run = r.key "
        "AND e.seq > coalesce(d.acked_seq, 0))",
        (),
    )


def all_runs(j: Journal) -> list[RunRow]:
    return _run_rows(j, "", ())


def pending_events(j: Journal, run: int, *, after: int, limit: int = 1000) -> list[Event]:
    """The run's events with ``seq > after``, in seq order."""
    rows = j.conn.execute(
        "SELECT seq, run, kind, time, step, payload FROM events "
        "WHERE run = ? AND seq > ? ORDER BY seq LIMIT ?",
        (run, after, limit),
    ).fetchall()
    return [Event(*r) for r in rows]


def last_event(j: Journal, run: int, kinds: Iterable[str], *, before: int) -> Event | None:
    """The run's latest event of one of ``kinds`` with ``seq < before``, or None.

    The daemon uses it to tell a FAILED set by the server's reaper from one the journal sent.
    """
    kinds = list(kinds)
    marks = ",".join("?" * len(kinds))
    row = j.conn.execute(
        f"SELECT seq, run, kind, time, step, payload FROM events WHERE run = ? AND seq < ? "
        f"AND kind IN ({marks}) ORDER BY seq DESC LIMIT 1",
        (run, before, *kinds),
    ).fetchone()
    return Event(*row) if row else None


def _ensure_delivery(j: Journal, run: int) -> None:
    j.conn.execute("INSERT OR IGNORE INTO delivery (run) VALUES (?)", (run,))


def ack(j: Journal, run: int, upto_seq: int, **server: Any) -> None:
    """Advance the run's acknowledged seq and record server fields, in one transaction.

    ``server`` may hold ``server_id``, ``display_id``, ``number``, ``url``, ``conflict``.
    Clears the last error: the server answered.
    """
    allowed = {"server_id", "display_id", "number", "url", "conflict"}
    bad = set(server) - allowed
    if bad:
        raise ValueError(f"unknown delivery fields {sorted(bad)}")
    with j.transaction():
        _ensure_delivery(j, run)
        sets = ["acked_seq = max(acked_seq, ?)", "attempts = 0", "last_error = NULL",
                "next_try = NULL", "updated_at = ?"]
        args: list[Any] = [upto_seq, now_ms()]
        for k, v in server.items():
            sets.append(f"{k} = ?")
            args.append(v)
        j.conn.execute(f"UPDATE delivery SET {', '.join(sets)} WHERE run = ?", (*args, run))


def reject(j: Journal, event: Event, *, code: int | None, reason: str, ack_seq: bool = True) -> None:
    """Record an event the server refused for good and (by default) move past it."""
    with j.transaction():
        _ensure_delivery(j, event.run)
        j.conn.execute(
            "INSERT OR REPLACE INTO rejected (seq, run, kind, code, reason, at) VALUES (?, ?, ?, ?, ?, ?)",
            (event.seq, event.run, event.kind, code, reason, now_ms()),
        )
        if ack_seq:
            j.conn.execute(
                "UPDATE delivery SET acked_seq = max(acked_seq, ?), updated_at = ? WHERE run = ?",
                (event.seq, now_ms(), event.run),
            )


def mark_sent(j: Journal, run: int, seq: int) -> None:
    """Record, before sending, that a request carrying events up to ``seq`` is going out.

    After a crash, ``sent_seq > acked_seq`` tells the daemon the server may already have the
    request: a ``create`` answered ``resumed: true`` is then our own, not a conflict.
    """
    with j.transaction():
        _ensure_delivery(j, run)
        j.conn.execute(
            "UPDATE delivery SET sent_seq = max(sent_seq, ?) WHERE run = ?", (seq, run)
        )


def sent_seq(j: Journal, run: int) -> int:
    row = j.conn.execute("SELECT sent_seq FROM delivery WHERE run = ?", (run,)).fetchone()
    return row[0] if row else 0


def record_error(j: Journal, run: int, error: str, *, next_try: float | None = None,
                 conflict: str | None = None) -> None:
    """Note a failed attempt (shown by ``plutosync status``); nothing is acknowledged."""
    with j.transaction():
        _ensure_delivery(j, run)
        j.conn.execute(
            "UPDATE delivery SET attempts = attempts + 1, last_error = ?, next_try = ?, "
            "conflict = coalesce(?, conflict), updated_at = ? WHERE run = ?",
            (error, next_try, conflict, now_ms(), run),
        )


def rejected_events(j: Journal, run: int | None = None) -> list[dict]:
    sql = "SELECT seq, run, kind, code, reason, at FROM rejected"
    args: tuple = ()
    if run is not None:
        sql += " WHERE run = ?"
        args = (run,)
    return list(j.db.query(sql + " ORDER BY seq", args))


def event_counts(j: Journal) -> dict[int, dict[str, int]]:
    """Per run key: ``total``, ``pending`` (after the acked seq) and ``rejected`` event counts."""
    out: dict[int, dict[str, int]] = {}
    for run, total, pending in j.conn.execute(
        "SELECT e.run, count(*), sum(e.seq > coalesce(d.acked_seq, 0)) FROM events e "
        "LEFT JOIN delivery d ON d.run = e.run GROUP BY e.run"
    ):
        out[run] = {"total": total, "pending": pending or 0, "rejected": 0}
    for run, n in j.conn.execute("SELECT run, count(*) FROM rejected GROUP BY run"):
        out.setdefault(run, {"total": 0, "pending": 0, "rejected": 0})["rejected"] = n
    return out


def writers(j: Journal, run: int | None = None) -> list[dict]:
    sql = "SELECT id, run, pid, host, opened_at, ended_at, ended_how FROM writers"
    args: tuple = ()
    if run is not None:
        sql += " WHERE run = ?"
        args = (run,)
    return list(j.db.query(sql, args))


def prune(j: Journal, *, older_than_ms: int, live_runs: Iterable[int] = ()) -> int:
    """Delete acknowledged events older than ``older_than_ms`` ago; returns how many.

    Unacknowledged events are never deleted, nor anything of a run in ``live_runs``.
    """
    cutoff = now_ms() - older_than_ms
    live = list(live_runs)
    marks = ",".join("?" * len(live)) or "NULL"
    with j.transaction():
        cur = j.conn.execute(
            "DELETE FROM events WHERE time < ? AND seq <= "
            "(SELECT acked_seq FROM delivery d WHERE d.run = events.run) "
            f"AND run NOT IN ({marks})",
            (cutoff, *live),
        )
    return cur.rowcount


def _run_rows(j: Journal, where: str, args: tuple) -> list[RunRow]:
    sql = (
        "SELECT r.key, r.project, r.run_id, r.ref_kind, r.name, r.created_at, r.config, r.tags, "
        "d.server_id, d.display_id, d.number, d.url, coalesce(d.acked_seq, 0), "
        "coalesce(d.attempts, 0), d.last_error, d.next_try, d.conflict "
        f"FROM runs r LEFT JOIN delivery d ON d.run = r.key {where} ORDER BY r.key"
    )
    out = []
    for row in j.conn.execute(sql, args):
        row = list(row)
        row[6] = json.loads(row[6])
        row[7] = json.loads(row[7])
        out.append(RunRow(*row))
    return out


# --------------------------------------------------------------------------- writers' liveness


def live_writer_ids(j: Journal) -> set[str]:
    """Ids of writers whose process is alive: each holds a lock on its spill file."""
    from pluto_offline import spill

    return spill.live_writer_ids(j.spill_dir)


def recover(j: Journal) -> int:
    """Fold the spill files of dead writers into ``events`` and mark those writers ``killed``.

    Every reader calls this before reading (the SDK at ``init``, plutosync on each pass), so
    that ``log()`` calls that returned before a SIGKILL are delivered. Returns records folded.
    """
    from pluto_offline import spill

    return spill.recover_orphans(j)


# --------------------------------------------------------------------------- metrics payloads
# A ``metrics`` event's payload is either TEXT, NDJSON lines exactly as /ingest/metrics takes
# them, or a BLOB of packed records. The SDK writes BLOBs: turning floats into decimal text is
# the costliest step of the write path, so it is left to plutosync, off the training process.
# A packed record is a u32 little-endian length, then that many bytes: Python's ``marshal``
# (format version 4) of the tuple ``(step: int, time_ms: int, data: dict[str, int | float])``.
_u32 = struct.Struct("<I")
_compact_json = json.JSONEncoder(separators=(",", ":")).encode


def pack_metrics(records: Iterable[bytes]) -> bytes:
    """Packed-record payload from ``marshal`` bytes of ``(step, time_ms, data)`` tuples."""
    return b"".join(_u32.pack(len(r)) + r for r in records)


def unpack_metrics(payload: bytes | str | None) -> list[tuple[int, int, dict]]:
    """The ``(step, time_ms, data)`` tuples of a metrics payload, in order."""
    if not payload:
        return []
    if isinstance(payload, str):
        out = []
        for line in payload.split("\n"):
            if line.strip():
                d = json.loads(line)
                out.append((d["step"], d["time"], d["data"]))
        return out
    out, off, end = [], 0, len(payload)
    view = memoryview(payload)
    while off < end:
        (n,) = _u32.unpack_from(payload, off)
        out.append(marshal.loads(view[off + 4:off + 4 + n]))
        off += 4 + n
    return out


def metrics_ndjson(payload: bytes | str | None) -> str:
    """A metrics payload as NDJSON text for /ingest/metrics (TEXT payloads pass through)."""
    if not payload:
        return ""
    if isinstance(payload, str):
        return payload
    # a log({}) call advances the step but has nothing to send
    lines = [{"time": t, "step": s, "data": d} for s, t, d in unpack_metrics(payload) if d]
    # One C-level encode for the batch; an unescaped '"' cannot occur inside a JSON string
    # and metric values are numbers, so '},{"time":' only occurs between two lines.
    return _compact_json(lines)[1:-1].replace('},{"time":', '}\n{"time":')
