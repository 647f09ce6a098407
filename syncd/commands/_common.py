"""Helpers shared by the operator commands (status, export, prune, push)."""

from __future__ import annotations

import argparse
import os
import sqlite3
import stat
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from pluto_offline import journal

# Exit codes: 0 ok, 1 "--check found something", 2 the command could not do its job.
EXIT_OK, EXIT_CHECK, EXIT_ERROR = 0, 1, 2

DIR_HELP = "journal directory or .db file (default: $PLUTO_DIR, else ~/.local/share/pluto-offline)"


def add_command(
    subparsers: argparse._SubParsersAction, name: str, *, help: str, description: str,
    epilog: str, several_dirs: bool = False,
) -> argparse.ArgumentParser:
    """A sub-command parser with the layout every operator command shares, and its --dir."""
    p = subparsers.add_parser(
        name, help=help, description=description, epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if several_dirs:
        p.add_argument("--dir", action="append", metavar="D", help=DIR_HELP + "; repeat for several")
    else:
        p.add_argument("--dir", metavar="D", help=DIR_HELP)
    return p


def fail(command: str, message: str) -> int:
    """Print an error the way every plutosync command does, and return the error exit code."""
    print(f"plutosync {command}: {message}", file=sys.stderr)
    return EXIT_ERROR


def no_journal_found(where: str | os.PathLike[str]) -> str:
    """What ``push`` and ``run --once`` say for a path with no journal in it."""
    return (f"no journal found in {where} (a journal directory holds {journal.JOURNAL_FILE}; "
            "an export is a .db file)")


def journal_label(file: Path) -> str:
    """A journal as people name it: its directory, or the file itself for an export."""
    return str(file.parent if file.name == journal.JOURNAL_FILE else file)


def journal_file(path: str | None) -> Path:
    """The journal file a ``--dir`` value names (a directory, a ``.db`` file, or the default).

    A path this user may not look into is taken as a directory: opening it then says what is
    closed (:func:`open_existing`)."""
    try:
        return journal.resolve_path(path)
    except PermissionError:
        raw = path or os.environ.get("PLUTO_DIR") or journal.default_dir()
        p = Path(raw).expanduser()
        return p if p.suffix == ".db" else p / journal.JOURNAL_FILE


def open_existing(path: str | None, *, readonly: bool, command: str = "status") -> journal.Journal:
    """Open a journal that must already exist; never creates one by mistake.

    ``readonly``: only read it, which any user who may read the file can do (another user's
    journal opened to them, a copy on read-only media). Otherwise this user must own it, as
    for ``plutosync run`` (:func:`lock.check_owner`). Raises :class:`journal.JournalError` with
    a message that names the path, what is missing and what to do (``command`` is named in it).
    """
    from syncd import lock

    file = journal_file(path)
    try:
        lock.check_readable(file, command)
        if not readonly and file.exists():
            lock.check_owner(file)
    except lock.JournalAccessError as exc:
        raise journal.JournalError(str(exc)) from None
    if readonly:
        return _open_readonly(file, command)
    # validate read-only first: a writable open would add our schema to any SQLite file
    journal.Journal.open(file, readonly=True).close()
    return journal.Journal.open(file, readonly=readonly, create=False)


def _open_readonly(file: Path, command: str) -> journal.Journal:
    """A read-only open that needs no write access anywhere.

    SQLite reads a WAL journal through a ``-shm`` index it creates when missing: in a directory
    this user may not write (another user's journal, read-only media) that fails. Without a
    write-ahead log beside the file no writer has it open, and the file alone is the whole
    journal: it is then read as it is (SQLite's ``immutable`` mode), creating nothing.
    """
    from syncd import lock

    try:
        return journal.Journal.open(file, readonly=True, create=False)
    except journal.JournalError as exc:
        cause = exc.__cause__
        if not isinstance(cause, sqlite3.DatabaseError) or not any(
                w in str(cause) for w in ("readonly", "unable to open")):
            raise
        why = lock.readonly_trouble(file, command)
        if why:
            raise journal.JournalError(why) from None
        wal = file.with_name(file.name + "-wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise journal.JournalError(
                f"cannot read journal {file} read-only ({cause}): a writer has it open and "
                "SQLite needs its -shm index to read it; run plutosync "
                f"{command} as the journal's owner") from None
    uri = "file:" + urllib.parse.quote(str(file.absolute())) + "?mode=ro&immutable=1"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    except sqlite3.DatabaseError as exc:
        raise explain(exc, file) from exc
    try:
        journal.store._ensure_schema(conn, file, readonly=True)
        return journal.Journal(file, conn)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise explain(exc, file) from exc
    except BaseException:
        conn.close()
        raise


def explain(exc: sqlite3.DatabaseError, file: Path) -> journal.JournalError:
    """A clear message for an SQLite error met while reading (damaged file, lock, ...)."""
    return journal._explain(exc, file)


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def is_writable(file: Path) -> bool:
    """Whether we may write the journal (and so fold dead writers' spill files first)."""
    return os.access(file, os.W_OK) and os.access(file.parent, os.W_OK)


# --------------------------------------------------------------------------- is it a journal?

SQLITE_MAGIC = b"SQLite format 3\x00"
JOURNAL_TABLES = ("meta", "events", "runs")
NOT_JOURNAL_SUFFIXES = ("-wal", "-shm", "-journal", ".lock", ".spill", ".spill.new")


@dataclass(frozen=True)
class Probe:
    """What :func:`probe_journal` found in a file.

    ``kind``: ``journal`` (a pluto-offline journal's schema, of any version: a newer one is
    refused by :meth:`journal.Journal.open` with its own message), ``missing``, ``empty``
    (0 bytes, or an SQLite file without tables), ``not-sqlite``, ``foreign`` (an SQLite database
    without the journal's tables), ``damaged`` (an SQLite header, but SQLite finds the file
    malformed) or ``unreadable`` (no permission, locked).
    ``reason`` says what is wrong in words that follow the file's name; ``message`` is the full
    sentence for a file meant as a journal, with what to do.
    """

    file: Path
    kind: str
    reason: str = ""

    @property
    def is_journal(self) -> bool:
        return self.kind == "journal"

    @property
    def message(self) -> str:
        f = self.file
        if self.kind == "missing":
            return f"no journal at {f}: check the path"
        if self.kind == "empty":
            return (f"{f} is {self.reason}: it is not a journal and holds nothing to deliver; "
                    "nothing was written to it. Delete it or move it aside")
        if self.kind == "not-sqlite" and f.suffix != ".db":
            # journals and exports are .db files: this one was named by mistake (a script, a
            # log), not damaged
            return (f"{f} is not a journal ({self.reason}): give a journal.db, an export "
                    "(.db), or the directory holding them")
        if self.kind == "not-sqlite":
            return (f"journal {f} is damaged or is not a journal ({self.reason}); move it aside "
                    "and restore it from a backup or an earlier export (plutosync export)")
        if self.kind == "foreign":
            return f"{f} is not a pluto-offline journal ({self.reason}); nothing was sent from it"
        if self.kind == "damaged":
            return (f"journal {f} is damaged ({self.reason}); move it aside and restore it from "
                    "a backup or an earlier export (plutosync export)")
        if self.kind == "unreadable":
            return (f"journal {f} cannot be read ({self.reason}); check its permissions, or "
                    "whether another program holds it locked")
        return f"{f}: {self.reason}" if self.reason else str(f)


def probe_journal(file: str | os.PathLike[str]) -> Probe:
    """Whether ``file`` holds a pluto-offline journal: the ``meta`` table with a
    ``schema_version``, and the ``events`` and ``runs`` tables.

    Strictly read-only: the file is never created, migrated or written, and no ``-wal`` /
    ``-shm`` file is left beside a file that had none (SQLite's ``immutable`` mode is used
    then; with a WAL present, a plain read-only open reads it too).
    """
    path = Path(file)
    try:
        st = path.stat()
    except FileNotFoundError:
        return Probe(path, "missing", "no such file")
    except OSError as exc:
        return Probe(path, "unreadable", exc.strerror or str(exc))
    if not stat.S_ISREG(st.st_mode):
        return Probe(path, "not-sqlite", "not a regular file")
    wal = path.with_name(path.name + "-wal")
    has_wal = wal.is_file() and wal.stat().st_size > 0
    if st.st_size == 0 and not has_wal:
        return Probe(path, "empty", "empty (0 bytes)")
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(SQLITE_MAGIC))
    except OSError as exc:
        return Probe(path, "unreadable", exc.strerror or str(exc))
    if st.st_size and head != SQLITE_MAGIC:
        return Probe(path, "not-sqlite", "its first bytes are not an SQLite header")
    uri = "file:" + urllib.parse.quote(str(path.absolute())) + "?mode=ro"
    if not has_wal:
        uri += "&immutable=1"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=5.0)
    except sqlite3.DatabaseError as exc:
        return _sqlite_trouble(path, exc)
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name")]
        if not tables:
            return Probe(path, "empty", "an empty SQLite database (no tables)")
        missing = [t for t in JOURNAL_TABLES if t not in tables]
        if missing:
            shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
            return Probe(path, "foreign", f"no {'/'.join(missing)} table; it holds {shown}")
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None or not str(row[0]).strip().isdigit():
            return Probe(path, "foreign", "its meta table has no schema_version")
    except sqlite3.DatabaseError as exc:
        return _sqlite_trouble(path, exc)
    finally:
        conn.close()
    return Probe(path, "journal")


def _sqlite_trouble(path: Path, exc: sqlite3.DatabaseError) -> Probe:
    text = str(exc)
    damaged = any(w in text for w in ("malformed", "not a database", "corrupt"))
    return Probe(path, "damaged" if damaged else "unreadable", text)
