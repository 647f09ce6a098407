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
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console, Group
from rich.filesize import decimal
from rich.live import Live
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from syncd import settings as settings_mod
from syncd.commands._common import no_journal_found
from syncd.commands.push_find import find_journals
from syncd.commands.push_follow import follow
from syncd.commands.push_journal import (  # noqa: F401 (push_one: for tests)
    FileTotals,
    Outcome,
    _bar_label,
    _QuietDamage,
    _short,
    _where,
    push_one,
)

__all__ = ["find_journals", "push_one", "main", "register"]

DEFAULT_TIMEOUT_S = 300.0

DESCRIPTION = """\
Deliver journals to the Pluto server once and exit: for a journal copied out of an air-gapped
site, or to finish a delivery by hand. PATH (or --dir PATH) is a journal directory, a journal
file (journal.db or an export), or a directory searched for journal files: every file whose
SQLite schema is a pluto-offline journal's, exports included, checked read-only (other files
are skipped; -v names them). Default: the journal in PLUTO_DIR. Several journals go in
parallel. Progress: a bar per journal counting its events and, for a journal with files to
upload (images, artifacts), one counting their bytes, with the speed; then a table per journal
(runs, events delivered, refused and left; files delivered and their bytes, left and lost).

Delivery state is kept in each journal, so pushing the same journal again sends nothing new.
A journal that a live plutosync delivers is left to it: push asks it to try now and follows
its progress until done or --timeout.
Transient errors (server down, 5xx, 429, an answer that is not the server's) are retried for
--timeout seconds; a refused API key or proxy login (407) stops at once, and nothing is
refused for it. Events the server refuses for good are recorded and listed, with those refused
by an earlier push or plutosync run; they are sent again only with --retry-rejected (once their
cause is fixed: listed before, and any refused again after). A journal that is empty, damaged
or not a journal is named with the reason and what to do, and the others are still delivered;
so are the runs of a damaged journal that can still be read. Files lost before they were
staged (a source changed or deleted first, the staging quota) can never be delivered: each run
with any is listed, with the count and the reason, on every push of the journal.

exit codes: 0 everything delivered, 1 something is left, was refused by the server, was lost
before it was staged or could not be read (listed with the reason), 2 bad usage, a PATH with
no journal in it, or one this user may not read or deliver (another user's journal: run as that
user) — the journals found elsewhere are still delivered."""


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
    p.add_argument("--retry-rejected", action="store_true",
                   help="send again the events refused earlier (their cause fixed: a proxy, a "
                        "server limit); they are listed before, and any refused again after")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="log each run as it is created, and name the files a search skipped")
    p.set_defaults(func=main)


class Transfer:
    """The byte bars: one per journal with files to upload, under the event bars, drawn by
    rich's DownloadColumn and TransferSpeedColumn. A watched bar reads its count each time the
    display is drawn (:meth:`sync`, ten times a second), so it moves while a large file
    uploads, and a stalled upload shows how far it got."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
            TextColumn("{task.fields[files]}"), TransferSpeedColumn(), TimeRemainingColumn(),
            console=console)
        self._watched: dict[TaskID, Callable[[], tuple[int, int]]] = {}
        self._of: dict[TaskID, int] = {}  # files to upload, per bar
        self._lock = threading.Lock()

    def add(self, path: Path, totals: FileTotals) -> TaskID:
        task = self.progress.add_task(_bar_label(path), total=totals.open_bytes,
                                      files=_files(0, totals.open))
        self._of[task] = totals.open
        return task

    def watch(self, task: TaskID, read: Callable[[], tuple[int, int]]) -> None:
        """Draw ``task`` from ``read()``: the (bytes, files) sent so far."""
        with self._lock:
            self._watched[task] = read

    def set(self, task: TaskID, sent: int, files: int, *, final: bool = False) -> None:
        """Draw ``task`` at ``sent`` bytes and ``files`` files; ``final``: its last figures
        (the speed shown from then on: the recent one, else the bar's average)."""
        with self._lock:
            self._watched.pop(task, None)
            self._update(task, sent, files)
            if final:
                (t,) = (t for t in self.progress.tasks if t.id == task)
                if sent and t.elapsed:
                    t.finished_speed = t.speed or sent / t.elapsed

    def remove(self, task: TaskID) -> None:
        with self._lock:
            self._watched.pop(task, None)
            self.progress.remove_task(task)

    def sync(self) -> None:
        with self._lock:
            for task, read in self._watched.items():
                self._update(task, *read())

    def _update(self, task: TaskID, sent: int, files: int) -> None:
        self.progress.update(task, completed=sent, files=_files(files, self._of[task]))


def _files(done: int, of: int) -> str:
    return f"{done}/{of} file{'s' * (of != 1)}"


def _bad_usage(args: argparse.Namespace) -> str | None:
    """What is wrong with ``--jobs`` / ``--timeout``, with the range they take; None: nothing."""
    if args.jobs < 1:
        return (f"--jobs {args.jobs}: give 1 or more journals to deliver in parallel "
                "(default 4)")
    if not args.timeout >= 0:  # nan too: it would never compare as past the deadline
        return (f"--timeout {args.timeout:g}: give 0 (keep trying) or more seconds "
                f"(default {DEFAULT_TIMEOUT_S:.0f})")
    return None


def main(args: argparse.Namespace) -> int:
    # a terminal wraps what does not fit; a log file or a pipe gets whole lines (paths intact)
    tty = sys.stderr.isatty()
    console = Console(stderr=True, soft_wrap=not tty)
    wrong = _bad_usage(args)
    if wrong is not None:  # before anything else: nothing is searched or sent
        console.print(f"plutosync push: {wrong}", markup=False, soft_wrap=True)
        return 2
    if not (os.environ.get("PLUTO_API_KEY") or os.environ.get("MLOP_API_KEY")):
        console.print("plutosync push: PLUTO_API_KEY is not set: export the API key of your "
                      "Pluto server (Settings → API keys) in the shell that runs plutosync "
                      "push (`export PLUTO_API_KEY=...`; it is read only from the "
                      "environment, never from an option)", markup=False, soft_wrap=True)
        return 2
    try:
        settings = settings_mod.from_args(args)
    except settings_mod.SettingsError as exc:
        console.print(f"plutosync push: {exc}", markup=False)
        return 2
    notes: list[tuple[str, str]] = []
    closed: list[str] = []
    try:
        files, empty = find_journals(list(args.paths) + list(args.dirs or []), notes, closed)
    except PermissionError as exc:
        console.print(f"plutosync push: cannot search {exc.filename}: {exc.strerror}; push as "
                      "the user whose jobs wrote the journal, or a copy of it that you own",
                      markup=False, soft_wrap=True)
        return 2
    for where in empty:  # a path named on purpose that holds nothing is a mistake to report
        console.print(f"plutosync push: {no_journal_found(where)}", markup=False,
                      soft_wrap=True)
    for line in closed:  # a directory this user may not read: whose it is, what to do
        console.print(f"plutosync push: {line}", markup=False, soft_wrap=True)
    for where, note in notes:
        if args.verbose or where in empty:
            console.print(f"plutosync push: {note}", markup=False, soft_wrap=True)
    if not files:
        return 2
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    handler: logging.Handler = (RichHandler(console=console, show_path=False, markup=False)
                                if tty else logging.StreamHandler(sys.stderr))
    handler.addFilter(_QuietDamage(args.verbose))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(message)s", handlers=[handler], force=True)
    timeout = args.timeout or None
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("events"), TimeElapsedColumn())
    unfinished = set(files)  # a run of one journal may wait for another to create it

    def one(file: Path) -> Outcome:
        try:
            for _ in range(3):  # a daemon that exits while followed: push takes over
                out = push_one(file, settings, stop, timeout, progress,
                               others=lambda: bool(unfinished - {file}),
                               retry_rejected=args.retry_rejected, transfer=transfer)
                if out.held_by is None:
                    return out
                followed = follow(file, out.held_by, timeout, stop, progress, transfer)
                if followed is not None:
                    return followed
            out.fail(f"the plutosync delivering {file} kept exiting while followed; push again")
            return out
        finally:
            unfinished.discard(file)

    progress = Progress(*columns, console=console)
    transfer = Transfer(console)

    def frame() -> Group:  # the byte bars read their counts as the display is drawn
        transfer.sync()
        return Group(progress, transfer.progress)

    try:
        with Live(console=console, get_renderable=frame, refresh_per_second=10,
                  transient=False):
            with ThreadPoolExecutor(max_workers=args.jobs) as pool:
                outcomes = list(pool.map(one, files))
    finally:
        signal.signal(signal.SIGINT, previous)
    if not console.is_interactive:
        console.print()  # as rich's Progress ends in a log or a pipe
    _summary(console, outcomes)
    # another user's journal is a usage error (run as that user), like a PATH with none in it
    if not all(o.clean or o.wrong_user for o in outcomes):
        return 1
    return 2 if empty or closed or any(o.wrong_user for o in outcomes) else 0


def _summary(console: Console, outcomes: list[Outcome]) -> None:
    tty = sys.stdout.isatty()
    table = Table(title="plutosync push")
    with_files = any(o.files or o.files_delivered or o.files_left or o.files_lost
                     for o in outcomes)
    for col in ("journal", "runs", "delivered", "rejected", "left") + ("files",) * with_files:
        table.add_column(col, justify="left" if col == "journal" else "right",
                         no_wrap=not tty and col == "journal")
    for o in outcomes:
        left = "?" if o.left < 0 else str(o.left)
        rejected = str(o.rejected + o.rejected_before)
        if o.rejected_before:
            rejected += f" ({o.rejected_before} earlier)"
        # a terminal gets a cut name; a log or a pipe the whole path, never cut
        cells = [_short(o.path) if tty else _where(o.path), str(o.runs), str(o.delivered),
                 rejected, left]
        if with_files:  # files delivered (their bytes), and any left or lost
            cells.append(f"{o.files_delivered} ({decimal(o.bytes_delivered)})"
                         + (f", {o.files_left} left" if o.files_left else "")
                         + (f", {o.files_lost} lost" if o.files_lost else ""))
        table.add_row(*cells)
    widest = max((len(_where(o.path)) for o in outcomes), default=0)
    Console(width=None if tty else max(200, widest + 80)).print(table)
    for o in outcomes:
        if o.via is not None:
            console.print(f"{_where(o.path)}: {o.via}", markup=False, soft_wrap=True)
        if o.retried is not None:
            console.print(f"sent again from {_where(o.path)}: {o.retried}", markup=False,
                          soft_wrap=True)
        for line in o.rejections:
            console.print(f"rejected in {_where(o.path)}: {line}", markup=False, soft_wrap=True)
        for line in o.lost:
            console.print(f"lost in {_where(o.path)}: {line}", markup=False, soft_wrap=True)
        for line in o.problems:
            console.print(f"not delivered from {_where(o.path)}: {line}", markup=False,
                          soft_wrap=True)
    if all(o.clean for o in outcomes):
        if any(o.total or o.reasserts or o.files for o in outcomes):
            console.print("everything delivered", markup=False)
        else:
            console.print("nothing to send: everything was delivered before", markup=False)
        return
    parts = []
    refused = sum(o.rejected + o.rejected_before for o in outcomes)
    if refused:
        parts.append(f"{refused} event{'s' * (refused != 1)} refused by the server for good "
                     "(kept in the journal; once the cause is fixed, `plutosync push "
                     "--retry-rejected` sends them again)")
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
    files_left = sum(o.files_left for o in outcomes)
    if files_left:
        parts.append(f"{files_left} file{'s' * (files_left != 1)} left to upload")
    lost = sum(o.files_lost for o in outcomes)
    if lost:
        were = "files lost before they were" if lost != 1 else "file lost before it was"
        parts.append(f"{lost} {were} staged, never deliverable (listed above; `plutosync "
                     "status` names each)")
    unsettled = sum(o.unsettled for o in outcomes)
    if unsettled:
        parts.append(f"{unsettled} run{'s' * (unsettled != 1)} to re-assert")
    console.print("push incomplete: " + "; ".join(parts), markup=False, soft_wrap=True)
