"""Pushing one journal: deliver it once, account for what is left, never raise.

Whatever goes wrong with one journal (empty, damaged, not a journal, a page SQLite cannot read
met mid-delivery, an unexpected error) is that journal's :class:`Outcome`, named with the
reason. Inside a journal, an error while delivering one run stops that run only.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rich.progress import Progress

from pluto_offline import journal
from pluto_offline.journal import filerows, staged
from syncd import lock, resend, runstate
from syncd import settings as settings_mod
from syncd.client import PlutoClient
from syncd.commands._common import explain, probe_journal
from syncd.daemon import recover
from syncd.lock import JournalAccessError, JournalLock, LockHeldError
from syncd.replayer import Replayer, drain, journal_trouble

if TYPE_CHECKING:
    from syncd.commands.push import Transfer

log = logging.getLogger("plutosync")


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
    retried: str | None = None  # --retry-rejected: what became of the events sent again
    held_by: int | None = None  # the pid of a plutosync delivering the journal (push follows it)
    via: str | None = None  # who delivered it, when not this push
    wrong_user: bool = False  # this user may not deliver it (another user's journal): exit 2
    files: int = 0  # files to upload when the push started
    files_delivered: int = 0  # ... delivered during it, and their bytes
    bytes_delivered: int = 0
    files_left: int = 0  # files not delivered when it ended (staged or not)
    # files that can never be delivered (a source changed or deleted before it was staged,
    # the staging quota): a push never calls such a journal delivered, a repeat one included
    files_lost: int = 0
    lost: list[str] = field(default_factory=list)  # one line per run with lost files

    @property
    def clean(self) -> bool:
        return (self.left == 0 and not self.unsettled and not self.failed
                and not self.rejected and not self.rejected_before and not self.files_left
                and not self.files_lost)

    def fail(self, message: str, *, failed: bool = True) -> None:
        self.problems.append(message)
        self.left = -1
        self.failed = self.failed or failed


@dataclass(frozen=True)
class FileTotals:
    open: int = 0  # files not delivered yet (neither lost nor refused; staged or not)
    open_bytes: int = 0  # the staged bytes of those
    done: int = 0  # files delivered, and their bytes
    done_bytes: int = 0


def account_lost(j: journal.Journal, out: Outcome) -> None:
    """The journal's lost files (docs/media.md), one line per run: how many, and the reason of
    the first (``plutosync status`` names each)."""
    labels = {r.key: _label(r) for r in journal.all_runs(j)}
    by_run: dict[int, list[dict]] = {}
    for f in filerows.lost_files(j):
        if staged.lost_here(f["reason"]):  # not bytes only another copy holds (seed 1122)
            by_run.setdefault(f["run"], []).append(f)
    out.files_lost = sum(len(rows) for rows in by_run.values())
    out.lost = []
    for run, rows in by_run.items():
        n = len(rows)
        what = "1 file lost before it was" if n == 1 else f"{n} files lost before they were"
        first = rows[0]
        out.lost.append(f"{labels.get(run, f'run {run}')}: {what} staged: {first['reason']} "
                        f"(log name {first['log_name']!r})")


def file_totals(j: journal.Journal) -> FileTotals:
    """A journal's files to upload and uploaded (docs/journal.md: ``files``, ``file_delivery``)."""
    if not filerows.has_files(j):
        return FileTotals()
    got = {done: (n, size) for done, n, size in j.conn.execute(
        "SELECT coalesce(d.state, '') = 'done', count(*), coalesce(sum(f.size), 0) FROM files f "
        "LEFT JOIN file_delivery d ON d.id = f.id WHERE f.lost IS NULL "
        "AND coalesce(d.state, '') != 'rejected' GROUP BY 1")}
    return FileTotals(*got.get(0, (0, 0)), *got.get(1, (0, 0)))


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
        if journal_trouble(exc):
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
             others: Callable[[], bool] | None = None, *,
             retry_rejected: bool = False, transfer: Transfer | None = None) -> Outcome:
    """Deliver one journal; never raises: every failure is in the outcome.

    ``others``: whether other journals of this push are still to be delivered; while they
    are, a run waiting for the journal that starts it (an eval job's) keeps waiting.
    ``retry_rejected``: send the events refused earlier again first (:mod:`syncd.resend`),
    listing them on the progress console before. ``transfer``: where its byte bar goes."""
    out = Outcome(file)
    try:
        lock.check_owner(file)  # before reading it: a journal of another user is named so
        probe = probe_journal(file)  # read-only: an empty file must not become a journal
        if not probe.is_journal:
            out.fail(probe.message)
            return out
        with JournalLock(file):
            j = journal.Journal.open(file, create=False)
            try:
                _deliver(j, settings, stop, timeout, progress, out, others, retry_rejected,
                         transfer)
            finally:
                j.close()
    except LockHeldError as exc:
        if exc.pid and not retry_rejected:
            out.held_by = exc.pid  # the caller follows that daemon (push_follow)
            return out
        out.fail(str(exc) if not retry_rejected else f"{exc} (--retry-rejected needs the "
                 "journal to itself)", failed=False)
    except JournalAccessError as exc:
        out.fail(f"{exc}; or push a copy of it that you own")
        out.wrong_user = True
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
             others: Callable[[], bool] | None = None, retry_rejected: bool = False,
             transfer: Transfer | None = None) -> None:
    started = journal.now_ms()
    recover(j)
    earlier = journal.rejected_events(j) if retry_rejected else []
    counts = journal.event_counts(j)
    files = file_totals(j)
    out.files = files.open
    out.total = sum(c["pending"] for c in counts.values()) + len(earlier)
    out.runs = len(counts)
    out.reasserts = len(journal.runs_to_reassert(j))
    # nothing to send: no "0/0 events" bar (the summary says "nothing to send")
    task = progress.add_task(_bar_label(out.path), total=out.total) \
        if progress is not None and out.total else None
    client = PlutoClient(settings)
    replayer = Replayer(j, client, stop=stop, one_shot="push")
    replayer.wait_for_creators = others or (lambda: False)
    if progress is not None and task is not None:
        replayer.on_progress = lambda p: progress.update(task, completed=p.events)
    # files to upload: a bar in bytes, read from the files lane while it uploads
    bar = transfer.add(out.path, files) if transfer is not None and files.open_bytes else None
    if transfer is not None and bar is not None:
        lane = replayer.files
        transfer.watch(bar, lambda: (lane.sent_bytes, lane.files_done))
    deadline = None if not timeout else time.monotonic() + timeout
    tried: resend.Tried | None = None
    try:
        if earlier:
            _list_earlier(j, out, earlier, progress)
            tried = resend.retry_rejected(replayer)
            if progress is not None and task is not None:  # the reopened runs' events too
                pending = sum(c["pending"] for c in journal.event_counts(j).values())
                progress.update(task, total=pending + replayer.totals.events)
        drain(replayer, deadline=deadline, give_up_on_auth=True)
        if replayer.waiting_for_creators() and not stop.is_set():
            # the other journals are done now: one more look for the runs they may have created
            replayer.try_now(replayer.waiting_for_creators())
            drain(replayer, deadline=deadline, give_up_on_auth=True)
        replayer.reassert_now()  # stopped or timed out: what is noted, sent once now
    finally:
        replayer.close()
        client.close()
        out.delivered = replayer.totals.events - replayer.totals.rejected
        out.rejected = replayer.totals.rejected
        for key, (row, exc) in replayer.given_up.items():
            pending = counts.get(key, {}).get("pending", 0)
            out.failed = True
            out.problems.append(
                f"{_label(row)}: {replayer.moved.get(key, 0)} of its {pending} pending events "
                f"were delivered, then it stopped: {_reason(exc, out.path)}; the journal's "
                "other runs were still tried")
    after = file_totals(j)
    out.files_delivered, out.files_left = after.done - files.done, after.open
    out.bytes_delivered = after.done_bytes - files.done_bytes
    if transfer is not None and bar is not None:  # as the journal says (files found done too)
        transfer.set(bar, out.bytes_delivered, out.files_delivered, final=True)
    _account(j, out, started, stop, replayer)
    account_lost(j, out)  # after recovery and delivery: a killed job's files are staged by now
    if tried is not None:
        _account_retried(j, out, tried)


def _list_earlier(j: journal.Journal, out: Outcome, earlier: list[dict],
                  progress: Progress | None) -> None:
    """Name the refused events about to be sent again (--retry-rejected), before they go."""
    labels = {r.key: _label(r) for r in journal.all_runs(j)}
    lines = _rejection_lines(earlier, labels, 0)  # all earlier: said once, in the heading
    say = progress.console.print if progress is not None else None
    head = (f"sending again from {_where(out.path)}: {len(earlier)} event"
            f"{'s' * (len(earlier) != 1)} refused earlier:")
    for line in [head, *(f"  {x}" for x in lines)]:
        if say is not None:
            say(line, markup=False, soft_wrap=True, highlight=False)
        else:
            log.info("%s", line)


def _account_retried(j: journal.Journal, out: Outcome, tried: resend.Tried) -> None:
    """What became of the events sent again: one line; what could not be, each."""
    t = resend.tally(j, tried)
    parts = [f"{t.delivered} delivered"]
    if t.refused:
        parts.append(f"{t.refused} refused again (listed below)")
    if t.left:
        parts.append(f"{t.left} left to deliver")
    n = len(tried.seqs)
    out.retried = f"{n} event{'s' * (n != 1)} refused earlier: {', '.join(parts)}"
    if tried.stopped:
        out.retried += f"; stopped before the rest: {tried.stopped}"
    out.problems.extend(tried.kept)


def _account(j: journal.Journal, out: Outcome, started: int, stop: threading.Event,
             replayer: Replayer) -> None:
    """What is left in the journal after the push, and why; every rejected event."""
    after = journal.event_counts(j)
    out.left = sum(c["pending"] for c in after.values())
    refused_key = replayer.last_auth_error
    if refused_key is not None:
        out.problems.append(refused_key.describe_once("push"))
    for row in journal.runs_with_pending(j):
        if row.key in replayer.given_up:
            continue  # said above, with what stopped it
        why = row.conflict or replayer.hold_reason(row.key) or row.last_error or (
            "stopped" if stop.is_set() else "timed out")
        why = replayer.refused_key_note(why) or why
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
    """A journal's name cut to 40 characters, for a terminal's progress bar."""
    text = _where(path)
    return text if len(text) <= 40 else "…" + text[-39:]


def _bar_label(path: Path) -> str:
    """The progress bar's label: cut on a terminal, whole in a log or a pipe (where the bars
    are printed once, at the end, and a cut path cannot be told from another)."""
    return _short(path) if sys.stderr.isatty() else _where(path)

