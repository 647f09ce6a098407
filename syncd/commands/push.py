"""``plutosync push``: deliver one or many journals once, with progress, then exit.

Whatever goes wrong with one journal (empty, damaged, not a journal, a page SQLite cannot read
met mid-delivery, an unexpected error) is that journal's outcome, named with the reason: the
other journals are still delivered and the summary is always printed. Inside a journal, an
error while delivering one run stops that run only.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pluto_offline import journal
from syncd import runstate
from syncd import settings as settings_mod
from syncd.client import PlutoClient
from syncd.commands._common import NOT_JOURNAL_SUFFIXES, explain, probe_journal
from syncd.daemon import recover
from syncd.lock import JournalLock, LockHeldError
from syncd.replayer import Replayer, drain

log = logging.getLogger("plutosync")

DEFAULT_TIMEOUT_S = 300.0

DESCRIPTION = """\
Deliver journals to the Pluto server once and exit: for a journal copied out of an air-gapped
site, or to finish a delivery by hand. PATH (or --dir PATH) is a journal directory, a journal
file (journal.db or an export), or a directory searched for journal files: every file whose
SQLite schema is a pluto-offline journal's, exports included, checked read-only (other files
are skipped; -v names them). Default: the journal in PLUTO_DIR. Several journals go in
parallel.

Delivery state is kept in each journal, so pushing the same journal again sends nothing new.
Transient errors (server down, 5xx, 429) are retried for --timeout seconds; a refused API key
stops at once. Events the server refuses for good are recorded and listed, with those refused
by an earlier push or plutosync run; they are not retried. A journal that is empty, damaged or
not a journal is named with the reason and what to do, and the others are still delivered;
so are the runs of a damaged journal that can still be read.

exit codes: 0 everything delivered, 1 something is left, was refused by the server or could
not be read (listed with the reason), 2 bad usage or a PATH with no journal in it (the
journals found elsewhere are still delivered)."""


@dataclass
class Outcome:
    path: Path
    runs: int = 0
    total: int = 0  # events pending when the push started
    reasserts: int = 0  # runs whose final state was to be sent again when it started
    delivered: int = 0
    rejected: int = 0  # events the server refused during this push
    rejected_before: int = 0  # refused by an earlier push or plutosync run
    left: int = 0  # -1: unknown (the journal could not be read to the end)
    unsettled: int = 0  # runs whose final state is still to be re-asserted
    failed: bool = False  # empty, damaged, not a journal, or stopped by an error
    problems: list[str] = field(default_factory=list)
    rejections: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return (self.left == 0 and not self.unsettled and not self.failed
                and not self.rejected and not self.rejected_before)

    def fail(self, message: str, *, failed: bool = True) -> None:
        self.problems.append(message)
        self.left = -1
        self.failed = self.failed or failed


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "push", help="deliver journals once, with progress (bulk upload)",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="journal directories, journal files (journal.db, exports), or "
                        "directories searched for journal files")
    p.add_argument("--dir", action="append", dest="dirs", default=[], metavar="PATH",
                   help="a PATH too, as the other commands take it; repeat for several")
    settings_mod.add_arguments(p)
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                   help=f"give up retrying transient errors after this long per journal "
                        f"(default {DEFAULT_TIMEOUT_S:.0f}; 0 = keep trying)")
    p.add_argument("--jobs", type=int, default=4, metavar="N",
                   help="journals delivered in parallel (default 4)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="log each run as it is created, and name the files a search skipped")
    p.set_defaults(func=main)


# --------------------------------------------------------------------------- finding journals


def find_journals(paths: list[str],
                  notes: list[tuple[str, str]] | None = None) -> tuple[list[Path], list[str]]:
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
                for file, note in _search(p):
                    if note is None:
                        found.append(file)
                    elif notes is not None:
                        notes.append((raw, note))
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


def _search(root: Path) -> Iterator[tuple[Path, str | None]]:
    """The files under ``root`` to push, in a stable order, each with None; and the files
    skipped that look like databases (a ``.db`` name or an SQLite header), each with a note
    saying why. Files that are plainly something else (logs, spill files) are left out."""
    for dirpath, dirnames, filenames in os.walk(root):
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


# --------------------------------------------------------------------------- one journal


class _PushReplayer(Replayer):
    """The replayer, with a run whose delivery fails for a reason that is neither the server's
    answer to an event nor transient (its events unreadable where the file is damaged, a journal
    error, a bug) given up for this push at once, and the journal's other runs delivered: a
    one-shot delivery has no use for the service's slow retries of such a run."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.failed: dict[int, tuple[journal.RunRow, BaseException | str]] = {}
        self.moved: dict[int, int] = {}  # events acknowledged per run during this push

    def _ready(self, row: journal.RunRow) -> bool:
        return row.key not in self.failed and super()._ready(row)

    def outstanding(self) -> list[journal.RunRow]:
        return [r for r in super().outstanding() if r.key not in self.failed]

    def _deliver(self, row: journal.RunRow) -> None:
        before = self.totals.events
        try:
            super()._deliver(row)
        except Exception as exc:  # escaped the replayer's own handling: still this run's
            self.failed.setdefault(row.key, (row, exc))
            if not isinstance(exc, (sqlite3.DatabaseError, journal.JournalError)):
                log.info("run %s stopped by an unexpected error", _label(row), exc_info=exc)
        finally:
            self.moved[row.key] = self.moved.get(row.key, 0) + self.totals.events - before

    def _failed(self, ctx: Any, sched: Any, reason: str) -> None:
        # called by the replayer while it handles the run's error: keep the error itself
        exc = sys.exc_info()[1]
        self.failed.setdefault(ctx.row.key, (ctx.row, exc if _is_journal_trouble(exc) else reason))
        super()._failed(ctx, sched, reason)  # recorded for plutosync status


def _is_journal_trouble(exc: BaseException | None) -> bool:
    return isinstance(exc, (sqlite3.DatabaseError, journal.JournalError, OSError))


class _QuietDamage(logging.Filter):
    """A journal's damage is named once in the summary, with what to do: no traceback in the
    log for it (nor, unless -v, for any error the summary reports)."""

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        if _is_journal_trouble(exc):
            return False
        if not self.verbose:
            record.exc_info, record.exc_text = None, None
        return True


def _reason(exc: BaseException | str, file: Path) -> str:
    """What an error met while pushing ``file`` means, and what to do."""
    if isinstance(exc, str):  # the replayer's own words
        return exc
    if isinstance(exc, journal.JournalError):
        return str(exc)
    if isinstance(exc, sqlite3.DatabaseError):
        return str(explain(exc, file))
    if isinstance(exc, OSError):
        return f"journal {file}: {exc}"
    return (f"unexpected error ({type(exc).__name__}: {exc}): a plutosync bug; please report "
            "it with the traceback `plutosync push -v` prints")


def push_one(file: Path, settings: settings_mod.Settings, stop: threading.Event,
             timeout: float | None, progress: Progress | None = None,
             others: Callable[[], bool] | None = None) -> Outcome:
    """Deliver one journal; never raises: every failure is in the outcome.

    ``others``: whether other journals of this push are still to be delivered; while they
    are, a run waiting for the journal that starts it (an eval job's) keeps waiting."""
    out = Outcome(file)
    try:
        probe = probe_journal(file)  # read-only: an empty file must not become a journal
        if not probe.is_journal:
            out.fail(probe.message)
            return out
        with JournalLock(file):
            j = journal.Journal.open(file, create=False)
            try:
                _deliver(j, settings, stop, timeout, progress, out, others)
            finally:
                j.close()
    except LockHeldError as exc:
        out.fail(str(exc), failed=False)
    except Exception as exc:
        if not isinstance(exc, (sqlite3.DatabaseError, journal.JournalError)):
            log.info("%s: stopped by an unexpected error", file, exc_info=exc)
        if out.delivered:
            done = (f"; {out.delivered} of its events were delivered before that (they stay "
                    "delivered), the rest was not tried")
        else:
            done = "; nothing was sent from it"
        out.fail(_reason(exc, file) + done)
    return out


def _deliver(j: journal.Journal, settings: settings_mod.Settings, stop: threading.Event,
             timeout: float | None, progress: Progress | None, out: Outcome,
             others: Callable[[], bool] | None = None) -> None:
    started = journal.now_ms()
    recover(j)
    counts = journal.event_counts(j)
    out.total = sum(c["pending"] for c in counts.values())
    out.runs = len(counts)
    out.reasserts = len(journal.runs_to_reassert(j))
    task = progress.add_task(_short(out.path), total=out.total) if progress else None
    client = PlutoClient(settings)
    replayer = _PushReplayer(j, client, stop=stop)
    replayer.wait_for_creators = others or (lambda: False)
    if progress is not None and task is not None:
        replayer.on_progress = lambda p: progress.update(task, completed=p.events)
    deadline = None if not timeout else time.monotonic() + timeout
    try:
        drain(replayer, deadline=deadline, give_up_on_auth=True)
        if replayer.waiting_for_creators() and not stop.is_set():
            # the other journals are done now: one more look for the runs they may have created
            replayer.try_now(replayer.waiting_for_creators())
            drain(replayer, deadline=deadline, give_up_on_auth=True)
        replayer.reassert_now()  # stopped or timed out: what is noted, sent once now
    finally:
        client.close()
        out.delivered = replayer.totals.events - replayer.totals.rejected
        out.rejected = replayer.totals.rejected
        for key, (row, exc) in replayer.failed.items():
            pending = counts.get(key, {}).get("pending", 0)
            out.failed = True
            out.problems.append(
                f"{_label(row)}: {replayer.moved.get(key, 0)} of its {pending} pending events "
                f"were delivered, then it stopped: {_reason(exc, out.path)}; the journal's "
                "other runs were still tried")
    _account(j, out, started, stop, replayer)


def _account(j: journal.Journal, out: Outcome, started: int, stop: threading.Event,
             replayer: _PushReplayer) -> None:
    """What is left in the journal after the push, and why; every rejected event."""
    after = journal.event_counts(j)
    out.left = sum(c["pending"] for c in after.values())
    if replayer.last_auth_error is not None:
        out.problems.append(replayer.last_auth_error.describe())
    for row in journal.runs_with_pending(j):
        if row.key in replayer.failed:
            continue  # said above, with what stopped it
        why = row.conflict or replayer.hold_reason(row.key) or row.last_error or (
            "stopped" if stop.is_set() else "timed out")
        out.problems.append(f"{_label(row)}: {after[row.key]['pending']} events left: {why}")
    for row in journal.runs_to_reassert(j):
        out.unsettled += 1
        out.problems.append(f"{_label(row)}: its final "
                            f"config/tags/status are to be sent again at "
                            f"{runstate.clock(row.reassert_due)} "
                            "(a request got no answer and may still land late); push again "
                            "after that time")
    labels = {r.key: _label(r) for r in journal.all_runs(j)}
    rejected = journal.rejected_events(j)
    out.rejected = sum(1 for r in rejected if r["at"] >= started)
    out.rejected_before = len(rejected) - out.rejected
    out.rejections = _rejection_lines(rejected, labels, started)


def _rejection_lines(rejected: list[dict], labels: dict[int, str], started: int) -> list[str]:
    """One line per run, kind, reason and push: every rejected event, by its seq."""
    groups: dict[tuple, list[dict]] = {}
    for rej in rejected:
        key = (rej["run"], rej["kind"], rej["reason"], rej["at"] < started)
        groups.setdefault(key, []).append(rej)
    lines = []
    for (run, kind, reason, earlier), rows in groups.items():
        seqs = [r["seq"] for r in rows]
        what = (f"event {seqs[0]} ({kind})" if len(seqs) == 1
                else f"{len(seqs)} {kind} events (seq {_ranges(seqs)})")
        when = ""
        if earlier:
            at = max(r["at"] for r in rows) / 1000
            when = (f" (refused earlier, at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(at))},"
                    " by a previous push or plutosync run)")
        lines.append(f"{labels.get(run, f'run {run}')}: {what}: {reason}{when}")
    return lines


def _ranges(seqs: list[int], most: int = 12) -> str:
    """``3-7, 9, 12-40``: sorted seqs as ranges (the first ``most`` of them)."""
    spans: list[list[int]] = []
    for s in sorted(seqs):
        if spans and s == spans[-1][1] + 1:
            spans[-1][1] = s
        else:
            spans.append([s, s])
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans[:most])
    return text + (f", and {len(spans) - most} more ranges" if len(spans) > most else "")


def _label(row: journal.RunRow) -> str:
    return f"{row.project}/{row.name or row.run_id}"


def _where(path: Path) -> str:
    """A journal as people name it: its directory, or the file for an export."""
    return str(path.parent if path.name == journal.JOURNAL_FILE else path)


def _short(path: Path) -> str:
    text = _where(path)
    return text if len(text) <= 40 else "…" + text[-39:]


# --------------------------------------------------------------------------- the command


def main(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    try:
        settings = settings_mod.from_args(args)
    except settings_mod.SettingsError as exc:
        console.print(f"plutosync push: {exc}", markup=False)
        return 2
    notes: list[tuple[str, str]] = []
    files, empty = find_journals(list(args.paths) + list(args.dirs or []), notes)
    for where in empty:  # a path named on purpose that holds nothing is a mistake to report
        console.print(f"plutosync push: no journal found in {where} (a journal directory "
                      f"holds {journal.JOURNAL_FILE}; an export is a .db file)", markup=False,
                      soft_wrap=True)
    for where, note in notes:
        if args.verbose or where in empty:
            console.print(f"plutosync push: {note}", markup=False, soft_wrap=True)
    if not files:
        return 2
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    handler = RichHandler(console=console, show_path=False, markup=False)
    handler.addFilter(_QuietDamage(args.verbose))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(message)s", handlers=[handler], force=True)
    timeout = args.timeout or None
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("events"), TimeElapsedColumn())
    unfinished = set(files)  # a run of one journal may wait for another to create it

    def one(file: Path) -> Outcome:
        try:
            return push_one(file, settings, stop, timeout, progress,
                            others=lambda: bool(unfinished - {file}))
        finally:
            unfinished.discard(file)

    try:
        with Progress(*columns, console=console, transient=False) as progress:
            with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
                outcomes = list(pool.map(one, files))
    finally:
        signal.signal(signal.SIGINT, previous)
    _summary(console, outcomes)
    if not all(o.clean for o in outcomes):
        return 1
    return 2 if empty else 0


def _summary(console: Console, outcomes: list[Outcome]) -> None:
    table = Table(title="plutosync push")
    for col in ("journal", "runs", "delivered", "rejected", "left"):
        table.add_column(col, justify="left" if col == "journal" else "right")
    for o in outcomes:
        left = "?" if o.left < 0 else str(o.left)
        rejected = str(o.rejected + o.rejected_before)
        if o.rejected_before:
            rejected += f" ({o.rejected_before} earlier)"
        table.add_row(_short(o.path), str(o.runs), str(o.delivered), rejected, left)
    Console().print(table)
    for o in outcomes:
        for line in o.rejections:
            console.print(f"rejected in {_where(o.path)}: {line}", markup=False, soft_wrap=True)
        for line in o.problems:
            console.print(f"not delivered from {_where(o.path)}: {line}", markup=False,
                          soft_wrap=True)
    if all(o.clean for o in outcomes):
        if any(o.total or o.reasserts for o in outcomes):
            console.print("everything delivered", markup=False)
        else:
            console.print("nothing to send: everything was delivered before", markup=False)
        return
    parts = []
    refused = sum(o.rejected + o.rejected_before for o in outcomes)
    if refused:
        parts.append(f"{refused} event{'s' * (refused != 1)} refused by the server for good "
                     "(kept in the journal, not retried)")
    bad = sum(o.failed for o in outcomes)
    if bad:
        parts.append(f"{bad} journal{'s' * (bad != 1)} could not be delivered in full (named "
                     "above, with what to do)")
    left = sum(max(o.left, 0) for o in outcomes)
    if left:
        parts.append(f"{left} event{'s' * (left != 1)} left to deliver")
    others = sum(1 for o in outcomes if o.left < 0 and not o.failed)
    if others:
        parts.append(f"{others} journal{'s' * (others != 1)} not pushed")
    unsettled = sum(o.unsettled for o in outcomes)
    if unsettled:
        parts.append(f"{unsettled} run{'s' * (unsettled != 1)} to re-assert")
    console.print("push incomplete: " + "; ".join(parts), markup=False, soft_wrap=True)
