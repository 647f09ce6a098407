"""``plutosync push``: deliver one or many journals once, with progress, then exit."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pluto_offline import journal
from syncd import runstate
from syncd import settings as settings_mod
from syncd.client import PlutoClient
from syncd.daemon import recover
from syncd.lock import JournalLock, LockHeldError
from syncd.replayer import Replayer, drain

log = logging.getLogger("plutosync")

DEFAULT_TIMEOUT_S = 300.0

DESCRIPTION = """\
Deliver journals to the Pluto server once and exit: for a journal copied out of an air-gapped
site, or to finish a delivery by hand. PATH is a journal directory, a journal .db file, or a
directory searched for journals (default: PLUTO_DIR). Several journals go in parallel.

Delivery state is kept in each journal, so pushing the same journal again sends nothing new.
Transient errors (server down, 5xx, 429) are retried for --timeout seconds; a refused API key
stops at once. Events the server refuses for good are recorded and listed, not retried.

exit codes: 0 everything delivered, 1 something is left (listed with the reason), 2 bad usage
or a PATH with no journal in it (the journals found elsewhere are still delivered)."""


@dataclass
class Outcome:
    path: Path
    runs: int = 0
    total: int = 0  # events pending when the push started
    delivered: int = 0
    rejected: int = 0
    left: int = 0
    unsettled: int = 0  # runs whose final state is still to be re-asserted
    problems: list[str] = field(default_factory=list)
    rejections: list[str] = field(default_factory=list)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "push", help="deliver journals once, with progress (bulk upload)",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="journal directories, .db files, or directories holding journals")
    settings_mod.add_arguments(p)
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                   help=f"give up retrying transient errors after this long per journal "
                        f"(default {DEFAULT_TIMEOUT_S:.0f}; 0 = keep trying)")
    p.add_argument("--jobs", type=int, default=4, metavar="N",
                   help="journals delivered in parallel (default 4)")
    p.add_argument("-v", "--verbose", action="store_true", help="log each run as it is created")
    p.set_defaults(func=main)


def find_journals(paths: list[str]) -> tuple[list[Path], list[str]]:
    """The journal files named by PATHs (default PLUTO_DIR), each once, in order, and the
    PATHs under which none was found."""
    found: list[Path] = []
    empty: list[str] = []
    for raw in paths or [None]:
        file = journal.resolve_path(raw)
        before = len(found)
        if file.is_file():
            found.append(file)
        elif raw is not None and Path(raw).is_dir():
            found.extend(sorted(Path(raw).rglob(journal.JOURNAL_FILE)))
        if len(found) == before:
            empty.append(str(file.parent if raw is None else raw))
    unique: dict[Path, None] = {}
    for f in found:
        unique.setdefault(f.resolve(), None)
    return list(unique), empty


def push_one(file: Path, settings: settings_mod.Settings, stop: threading.Event,
             timeout: float | None, progress: Progress | None = None) -> Outcome:
    out = Outcome(file)
    try:
        with JournalLock(file):
            j = journal.Journal.open(file, create=False)
            try:
                _deliver(j, settings, stop, timeout, progress, out)
            finally:
                j.close()
    except LockHeldError as exc:
        out.problems.append(str(exc))
        out.left = -1
    except journal.JournalError as exc:
        out.problems.append(str(exc))
        out.left = -1
    return out


def _deliver(j: journal.Journal, settings: settings_mod.Settings, stop: threading.Event,
             timeout: float | None, progress: Progress | None, out: Outcome) -> None:
    recover(j)
    started = journal.now_ms()
    counts = journal.event_counts(j)
    out.total = sum(c["pending"] for c in counts.values())
    out.runs = len(counts)
    task = progress.add_task(_short(out.path), total=out.total or 1) if progress else None
    client = PlutoClient(settings)
    replayer = Replayer(j, client, stop=stop)
    if progress is not None and task is not None:
        replayer.on_progress = lambda p: progress.update(task, completed=p.events)
    deadline = None if not timeout else time.monotonic() + timeout
    try:
        drain(replayer, deadline=deadline, give_up_on_auth=True)
        replayer.reassert_now()  # stopped or timed out: what is noted, sent once now
    finally:
        client.close()
    out.delivered = replayer.totals.events - replayer.totals.rejected
    out.rejected = replayer.totals.rejected
    after = journal.event_counts(j)
    out.left = sum(c["pending"] for c in after.values())
    if replayer.last_auth_error is not None:
        out.problems.append(replayer.last_auth_error.describe())
    for row in journal.runs_with_pending(j):
        why = row.conflict or replayer.hold_reason(row.key) or row.last_error or (
            "stopped" if stop.is_set() else "timed out")
        out.problems.append(f"{row.project}/{row.name or row.run_id}: "
                            f"{after[row.key]['pending']} events left: {why}")
    for row in journal.runs_to_reassert(j):
        out.unsettled += 1
        out.problems.append(f"{row.project}/{row.name or row.run_id}: its final "
                            f"config/tags/status are to be sent again at "
                            f"{runstate.clock(row.reassert_due)} "
                            "(a request got no answer and may still land late); push again "
                            "after that time")
    for rej in journal.rejected_events(j):
        if rej["at"] >= started:
            out.rejections.append(f"event {rej['seq']} ({rej['kind']}): {rej['reason']}")


def _short(path: Path) -> str:
    text = str(path.parent if path.name == journal.JOURNAL_FILE else path)
    return text if len(text) <= 40 else "…" + text[-39:]


def main(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    try:
        settings = settings_mod.from_args(args)
    except settings_mod.SettingsError as exc:
        console.print(f"plutosync push: {exc}", markup=False)
        return 2
    files, empty = find_journals(args.paths)
    for where in empty:  # a path named on purpose that holds nothing is a mistake to report
        console.print(f"plutosync push: no journal found in {where} (a journal directory "
                      f"holds {journal.JOURNAL_FILE}; an export is a .db file)", markup=False)
    if not files:
        return 2
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    handler = RichHandler(console=console, show_path=False, markup=False)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(message)s", handlers=[handler], force=True)
    timeout = args.timeout or None
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("events"), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
                outcomes = list(pool.map(
                    lambda f: push_one(f, settings, stop, timeout, progress), files))
    finally:
        signal.signal(signal.SIGINT, previous)
    _summary(console, outcomes)
    if any(o.left or o.unsettled for o in outcomes):
        return 1
    return 2 if empty else 0


def _summary(console: Console, outcomes: list[Outcome]) -> None:
    table = Table(title="plutosync push")
    for col in ("journal", "runs", "delivered", "rejected", "left"):
        table.add_column(col, justify="left" if col == "journal" else "right")
    for o in outcomes:
        left = "?" if o.left < 0 else str(o.left)
        table.add_row(_short(o.path), str(o.runs), str(o.delivered), str(o.rejected), left)
    Console().print(table)
    for o in outcomes:
        for line in o.rejections:
            console.print(f"rejected in {_short(o.path)}: {line}", markup=False)
        for line in o.problems:
            console.print(f"not delivered from {_short(o.path)}: {line}", markup=False)
    if all(o.left == 0 and not o.unsettled for o in outcomes):
        console.print("everything delivered", markup=False)

