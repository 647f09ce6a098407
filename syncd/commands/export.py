"""``plutosync export``: a consistent one-file snapshot of a journal, to carry elsewhere."""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pluto_offline import journal
from pluto_offline.journal import carried
from syncd.commands._common import (
    EXIT_OK,
    add_command,
    explain,
    fail,
    human_size,
    is_writable,
    journal_file,
    open_existing,
)
from syncd.runstate import live_run_keys

DESCRIPTION = """\
Write a consistent single-file copy of a journal, for example to carry it out of an
air-gapped site and deliver it with `plutosync push FILE` on a machine that reaches the server.

It is safe while jobs are still logging: the copy is taken with SQLite's online backup, so it
holds every event committed at one instant and nothing half-written. The file is written to a
temporary name beside FILE and renamed into place (owner-only permissions, 0600), so FILE is
either the old file or the complete new one.

What a snapshot holds: everything committed to the journal. A job that is still running keeps
its last few log() calls (at most its flush interval, 50 ms by default) in its spill file until
its writer commits them; the command names such runs. Export again after the jobs end for a
complete copy. Spill files of jobs that died are folded into the journal first (when the
journal is writable), so nothing they logged is left behind.

The delivery state travels with the file: pushing the same file twice sends nothing new."""

EPILOG = """\
examples:
  plutosync export --dir /scratch/pluto --out /media/usb/site-a-2024-06-01.db
  plutosync push /media/usb/site-a-2024-06-01.db        # later, outside

exit codes: 0 written, 2 nothing written (the message says why)."""


@dataclass
class ExportResult:
    """What ``export --json`` prints."""

    source: str
    out: str
    bytes: int
    journal_id: str
    runs: int
    events: int
    pending: int
    live_runs: list[str]  # project/run_id (the JSON's stable key)
    recovered: int
    notes: list[str]
    live_names: list[str] = field(default_factory=list)  # for people; not in the JSON
    files: int = 0  # staged files carried inside (those not delivered yet)
    file_bytes: int = 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers, "export", description=DESCRIPTION, epilog=EPILOG,
        help="snapshot a journal into one file (safe while jobs write), for `push FILE` elsewhere",
    )
    p.add_argument("--out", required=True, metavar="FILE",
                   help="the file to write; name it *.db so every tool sees a journal file")
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")
    p.add_argument("--json", action="store_true", help="print the result as a JSON object")
    p.set_defaults(func=run)


def export(source: str | None, out: Path, *, force: bool = False) -> ExportResult:
    """Snapshot the journal at ``source`` into ``out``; raises JournalError when it cannot."""
    src_file = journal_file(source)
    _check_target(src_file, out, force=force)
    recovered = 0
    notes: list[str] = []
    # another user's journal open to us is only read: files written beside it would be ours
    readonly = not is_writable(src_file) or not _owned(src_file)
    if readonly:
        notes.append("the journal is read-only here: spill files of jobs that died were not "
                     "folded in, so their last records are not in the snapshot")
    with open_existing(source, readonly=readonly, command="export") as src:
        if not readonly:
            try:
                recovered = journal.recover(src)  # a dead writer's spill is otherwise left out
            except (OSError, sqlite3.DatabaseError, journal.JournalError) as exc:
                notes.append(f"could not fold the spill files of jobs that died ({exc}); "
                             "their last records are not in the snapshot")
        live, names = _live_runs(src)
        tmp = out.parent / f".{out.name}.{os.getpid()}.tmp"
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            os.close(fd)
            counts = _backup(src, tmp)
            os.replace(tmp, out)
            _fsync_dir(out.parent)
        except OSError as exc:
            raise journal.JournalError(f"cannot write {out}: {exc.strerror or exc}") from exc
        except sqlite3.DatabaseError as exc:
            raise explain(exc, src_file) from exc
        finally:
            if tmp.exists():
                tmp.unlink()
    return ExportResult(
        source=str(src_file), out=str(out), bytes=out.stat().st_size, journal_id=src.id,
        live_runs=live, live_names=names, recovered=recovered, notes=notes, **counts,
    )


def _owned(file: Path) -> bool:
    try:
        return file.stat().st_uid == os.geteuid()
    except OSError:
        return True  # open_existing says what is wrong with it


def _check_target(src_file: Path, out: Path, *, force: bool) -> None:
    if out.is_dir():
        raise journal.JournalError(f"{out} is a directory: give a file name, e.g. {out}/journal.db")
    if not out.parent.is_dir():
        raise journal.JournalError(f"cannot write {out}: no such directory {out.parent}")
    if out.exists():
        if src_file.exists() and out.resolve() == src_file.resolve():
            raise journal.JournalError(f"{out} is the journal itself: choose another file")
        if not force:
            raise journal.JournalError(f"{out} exists; pass --force to replace it")


def _backup(src: journal.Journal, tmp: Path) -> dict[str, int]:
    dst = sqlite3.connect(str(tmp), isolation_level=None)
    try:
        # one step: a single read transaction on the source, so the copy is one instant of it
        src.conn.backup(dst, pages=-1)
        # a self-contained file: no -wal/-shm companions to forget when carrying it
        dst.execute("PRAGMA journal_mode=DELETE")
        problem = dst.execute("PRAGMA quick_check").fetchone()[0]
        if problem != "ok":
            raise journal.JournalError(f"the snapshot failed its integrity check: {problem}")
        snap = journal.Journal(tmp, dst)
        counts = journal.event_counts(snap)
        # the staged bytes of files not delivered yet travel inside the file (docs/media.md)
        blobs, blob_bytes = carried.carry(src, dst)
        result = {
            "runs": len(journal.all_runs(snap)),
            "events": sum(c["total"] for c in counts.values()),
            "pending": sum(c["pending"] for c in counts.values()),
            "files": blobs,
            "file_bytes": blob_bytes,
        }
        dst.commit()
    finally:
        dst.close()
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    return result


def _live_runs(j: journal.Journal) -> tuple[list[str], list[str]]:
    """Runs still being written: ``project/run_id`` each, and how people name them
    (``project/name``, with the run id when it differs)."""
    keys = live_run_keys(j)
    rows = [r for r in journal.all_runs(j) if r.key in keys]
    names = [f"{r.project}/{r.name}" + (f" (run id {r.run_id})" if r.name != r.run_id else "")
             if r.name else f"{r.project}/{r.run_id}" for r in rows]
    return [f"{r.project}/{r.run_id}" for r in rows], names


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def run(args: argparse.Namespace) -> int:
    try:
        res = export(args.dir, Path(args.out).expanduser(), force=args.force)
    except journal.JournalError as exc:
        return fail("export", str(exc))
    if args.json:
        shown = {k: v for k, v in asdict(res).items() if k != "live_names"}
        print(json.dumps(shown, indent=2))
        return EXIT_OK
    print(f"exported {res.source} -> {res.out} ({human_size(res.bytes)}): "
          f"{res.runs} run{'s' * (res.runs != 1)}, {res.events} events, "
          f"{res.pending} not yet delivered"
          + (f", {res.files} staged file{'s' * (res.files != 1)} "
             f"({human_size(res.file_bytes)}) carried inside" if res.files else ""))
    if res.recovered:
        print(f"folded {res.recovered} records from the spill files of jobs that died")
    for note in res.notes:
        print(f"note: {note}")
    if res.live_runs:
        print(f"still running: {', '.join(res.live_names)}; the snapshot has what they had "
              "committed (their last <= 50 ms of log() calls may be missing): export again "
              "after they finish for a complete copy")
    return EXIT_OK
