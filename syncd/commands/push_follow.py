"""Pushing a journal that a live ``plutosync`` already delivers (an autostarted one, a service).

Two deliverers must never share a journal, so push does not deliver it: it asks that daemon to
try now (``HURRY_SIGNAL``: every run's backoff skipped) and follows its progress in the journal,
read-only, with the same progress bar, until everything is delivered, ``--timeout`` passes or
the daemon exits (then push delivers the rest itself)::

    out = follow(file, pid, timeout, stop, progress, transfer)   # None: the daemon is gone

Files to upload get their byte bar too, read from the journal about once a second: it moves a
file at a time, when the daemon records the file delivered (the bytes of a file under way are
known only inside the daemon).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.progress import Progress, TaskID

from pluto_offline import journal
from syncd import lock
from syncd.commands.push_journal import (
    FileTotals,
    Outcome,
    _bar_label,
    _label,
    _rejection_lines,
    account_lost,
    file_totals,
)
from syncd.daemon import HURRY_SIGNAL

if TYPE_CHECKING:
    from syncd.commands.push import Transfer

FOLLOW_EVERY_S = 0.2
FILES_EVERY_S = 1.0  # the byte bar's reads of the journal


def follow(file: Path, pid: int | None, timeout: float | None, stop: threading.Event,
           progress: Progress | None, transfer: Transfer | None = None) -> Outcome | None:
    """Follow the daemon ``pid`` delivering ``file``; the outcome, or None once it exited."""
    out = Outcome(file)
    started = journal.now_ms()
    with journal.Journal.open(file, readonly=True) as j:
        out.total = _pending(j)
        out.runs = len(journal.all_runs(j))
        out.reasserts = len(journal.runs_to_reassert(j))
        files = file_totals(j)
        out.files = files.open
        task = progress.add_task(_bar_label(file), total=out.total) \
            if progress is not None and out.total else None
        bar = transfer.add(file, files) if transfer is not None and files.open_bytes else None
        files_read = time.monotonic()
        asked = _ask(pid)
        out.via = (f"followed the plutosync already delivering it (pid {pid}"
                   + (", asked to try now)" if asked else ")"))
        deadline = None if not timeout else time.monotonic() + timeout
        while True:
            left = _pending(j)
            if progress is not None and task is not None:
                progress.update(task, completed=max(out.total - left, 0))
            if transfer is not None and bar is not None \
                    and time.monotonic() - files_read >= FILES_EVERY_S:
                _show(transfer, bar, files, file_totals(j))
                files_read = time.monotonic()
            if not left and not journal.runs_to_reassert(j) and not file_totals(j).open:
                break
            if lock.holder(file) is None:
                if progress is not None and task is not None:
                    progress.remove_task(task)
                if transfer is not None and bar is not None:
                    transfer.remove(bar)
                return None  # the daemon exited: push delivers what is left itself
            if stop.is_set() or (deadline is not None and time.monotonic() >= deadline):
                break
            stop.wait(FOLLOW_EVERY_S)
        after = file_totals(j)
        out.files_delivered, out.files_left = after.done - files.done, after.open
        out.bytes_delivered = after.done_bytes - files.done_bytes
        if transfer is not None and bar is not None:
            _show(transfer, bar, files, after, final=True)
        _account(j, out, started, stop)
        account_lost(j, out)
    return out


def _show(transfer: Transfer, bar: TaskID, before: FileTotals, now: FileTotals,
          final: bool = False) -> None:
    transfer.set(bar, now.done_bytes - before.done_bytes, now.done - before.done, final=final)


def _ask(pid: int | None) -> bool:
    """Signal the daemon to try now, if ``pid`` is a plutosync this user may signal."""
    if not pid or not _is_plutosync(pid):
        return False
    try:
        os.kill(pid, HURRY_SIGNAL)
    except OSError:
        return False
    return True


def _is_plutosync(pid: int) -> bool:
    """Whether ``pid`` runs plutosync here (not a pid of another PID namespace's holder)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = fh.read().split(b"\0")
    except OSError:
        return False
    return any(a.endswith(b"plutosync") for a in argv[:2]) or b"syncd" in argv[:3]


def _pending(j: journal.Journal) -> int:
    return sum(c["pending"] for c in journal.event_counts(j).values())


def _account(j: journal.Journal, out: Outcome, started: int, stop: threading.Event) -> None:
    after = journal.event_counts(j)
    out.left = sum(c["pending"] for c in after.values())
    for row in journal.runs_with_pending(j):
        why = row.conflict or row.last_error or ("stopped" if stop.is_set() else "timed out")
        out.problems.append(f"{_label(row)}: {after[row.key]['pending']} events left: {why} "
                            "(the daemon goes on delivering it)")
    for row in journal.runs_to_reassert(j):
        out.unsettled += 1
        out.problems.append(f"{_label(row)}: its final config/tags/status are still to be sent "
                            "again (the daemon will)")
    rejected = journal.rejected_events(j)
    out.rejected = sum(1 for r in rejected if r["at"] >= started)
    out.rejected_before = len(rejected) - out.rejected
    out.delivered = max(out.total - out.left - out.rejected, 0)
    labels = {r.key: _label(r) for r in journal.all_runs(j)}
    out.rejections = _rejection_lines(rejected, labels, started)
