"""Finding the journals a ``plutosync push`` names: files, directories searched for journals."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from pluto_offline import journal
from syncd.commands._common import NOT_JOURNAL_SUFFIXES, probe_journal


def find_journals(paths: list[str], notes: list[tuple[str, str]] | None = None,
                  closed: list[str] | None = None) -> tuple[list[Path], list[str]]:
    """The journal files named by PATHs (default PLUTO_DIR), each once, in order, and the
    PATHs under which none was found.

    A file named on purpose is taken as it is (push reports it if it is not a journal). A
    directory is searched: every ``journal.db``, and every other file whose schema is a
    journal's (exports), checked read-only. ``notes`` receives ``(PATH, note)`` for the files
    of a search that look like databases but are not journals.
    """
    found: list[Path] = []
    empty: list[str] = []
    for raw in paths or [None]:
        before = len(found)
        if raw is None:
            file = journal.resolve_path(None)
            if file.is_file():
                found.append(file)
            where = str(file.parent)
        else:
            where = raw
            p = Path(raw).expanduser()
            if p.is_dir():
                shut: list[str] = []
                for file, note in _search(p, shut):
                    if note is None:
                        found.append(file)
                    elif notes is not None:
                        notes.append((raw, note))
                if closed is not None:
                    closed.extend(shut)
                if shut and len(found) == before:
                    continue  # said why: it cannot be read, not that it holds nothing
            else:
                file = journal.resolve_path(raw)
                if file.is_file():
                    found.append(file)
        if len(found) == before:
            empty.append(where)
    unique: dict[Path, None] = {}
    for f in found:
        unique.setdefault(f.resolve(), None)
    return list(unique), empty


def _search(root: Path, closed: list[str]) -> Iterator[tuple[Path, str | None]]:
    """The files under ``root`` to push, in a stable order, each with None; and the files
    skipped that look like databases (a ``.db`` name or an SQLite header), each with a note
    saying why. Files that are plainly something else (logs, spill files) are left out.
    A directory this user may not read is named in ``closed``, with its owner and mode."""

    def refused(exc: OSError) -> None:
        closed.append(cannot_read(Path(exc.filename or root), exc))

    for dirpath, dirnames, filenames in os.walk(root, onerror=refused):
        dirnames.sort()
        for name in sorted(filenames):
            if name.endswith(NOT_JOURNAL_SUFFIXES):  # SQLite's -wal/-shm, our lock and spill
                continue
            file = Path(dirpath) / name
            if not file.is_file():
                continue
            probe = probe_journal(file)
            if probe.is_journal or name == journal.JOURNAL_FILE:
                yield file, None  # a journal directory's file: its trouble is reported
            elif probe.kind in ("damaged", "unreadable") and name.endswith(".db"):
                yield file, None  # could be a damaged journal: say so rather than skip it
            elif probe.kind in ("damaged", "unreadable"):
                yield file, f"skipped {file}: cannot be read as SQLite: {probe.reason}"
            elif (name.endswith(".db") or probe.kind == "foreign"
                  or (probe.kind == "empty" and file.stat().st_size > 0)):
                yield file, f"skipped {file}: not a journal: {probe.reason}"



def cannot_read(d: Path, exc: OSError) -> str:
    """One line for a directory a push may not read: whose it is, its mode, what to do."""
    from syncd.lock import _mode, _name, _owner, _user

    owner = _owner(d)
    me = os.geteuid()
    whose = f"it belongs to {_user(owner)}, mode {_mode(d)}" if owner is not None else \
        exc.strerror or str(exc)
    run_as = f"push as {_name(owner)}" if owner is not None and owner != me else \
        "give your user read access to it"
    return (f"cannot read {d} as {_user(me)} ({exc.strerror or exc}: {whose}); {run_as}, or "
            "push a copy of the journal that you own")
