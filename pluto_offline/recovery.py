"""Finding live writers and recovering what dead ones left in their spill files.

A writer is alive while it holds the exclusive ``flock`` on ``spill/<writer_id>.spill``; a
file whose lock can be taken belongs to a dead writer, and its records are folded into the
journal by whoever finds it first (the SDK at ``init()``, plutosync on each pass)::

    recovered = recover_orphans(journal)
"""

from __future__ import annotations

import fcntl
import mmap
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pluto_offline.journal.forks import PREFIX as FORK_PREFIX
from pluto_offline.spill import NEW_SUFFIX, STALE_NEW_S, SUFFIX, scan

if TYPE_CHECKING:
    from pluto_offline.journal import Journal


def live_writer_ids(spill_dir: Path) -> set[str]:
    """Writers whose spill file is locked: their process is alive (or being recovered)."""
    alive = set()
    try:
        names = os.listdir(spill_dir)
    except FileNotFoundError:
        return alive
    for name in names:
        if not name.endswith(SUFFIX):
            continue
        try:
            fd = os.open(spill_dir / name, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            # a shared probe: two probers do not see each other as alive
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            alive.add(name[: -len(SUFFIX)])
        finally:
            os.close(fd)
    return alive


def recover_orphans(j: Journal) -> int:
    """Fold the spill files of dead writers into events, mark those writers ``killed``.

    Safe if two processes recover at once (each file is folded under its lock, and the fold
    position is committed with the events) and if the recoverer dies midway (the transaction
    rolls back; the file is deleted only after the commit). Returns the records folded.
    """
    spill_dir = j.spill_dir
    total = 0
    try:
        names = sorted(os.listdir(spill_dir))
    except FileNotFoundError:
        names = []
    for name in names:
        if name.endswith(SUFFIX):
            total += _recover_one(j, spill_dir / name, name[: -len(SUFFIX)])
        elif name.endswith(NEW_SUFFIX):
            _remove_stale_new(spill_dir / name)
    _end_vanished_writers(j)
    _report_killed(j)
    return total


def _recover_one(j: Journal, path: Path, writer_id: str) -> int:
    from pluto_offline import fold
    from pluto_offline.journal import drops, end_writer

    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return 0
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0  # alive, or another process is recovering it
        try:
            if os.stat(path).st_ino != os.fstat(fd).st_ino:
                return 0  # recovered and deleted while we waited
        except FileNotFoundError:
            return 0
        size = os.fstat(fd).st_size
        buf = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ) if size else b""
        try:
            folded = 0
            with j.transaction():
                row = j.conn.execute(
                    "SELECT run, folded FROM writers WHERE id = ?", (writer_id,)
                ).fetchone()
                if row is not None:
                    run_key, after = row
                    found = scan(buf, after)
                    if found.records:
                        fold.write(j, run_key, writer_id, found.records, found.last,
                                   found.schemas)
                        folded = len(found.records)
                    if found.dropped:
                        drops.record(j, writer_id, run_key, found.dropped)
                    if found.end is not None:
                        _journal_kept_end(j, run_key, writer_id, found.end)
                    end_writer(j, writer_id, "killed")  # (no-op after a kept end)
        finally:
            if isinstance(buf, mmap.mmap):
                buf.close()
        path.unlink(missing_ok=True)
        return folded
    finally:
        os.close(fd)


def _journal_kept_end(j: Journal, run_key: int, writer_id: str, end: tuple) -> None:
    """Journal the end a writer kept in its spill when the journal could not take it (a full
    disk): its status (or close), at the time it happened, and the writer ended that way."""
    from pluto_offline.journal import append_event, end_writer

    status, metadata, at = end
    if status is None:
        append_event(j, run_key, "close", time=at)
    else:
        append_event(j, run_key, "status", time=at,
                     payload={"status": status, "metadata": metadata})
    end_writer(j, writer_id, status or "closed")


def _remove_stale_new(path: Path) -> None:
    """Delete a ``.spill.new`` whose creator died before renaming it (it holds no records).

    Only old files are even opened: locking a young one could fail its creator's lock.
    """
    try:
        if time.time() - os.stat(path).st_mtime <= STALE_NEW_S:
            return
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path.unlink(missing_ok=True)
    except BlockingIOError:
        pass
    finally:
        os.close(fd)


def _end_vanished_writers(j: Journal) -> None:
    """Writers never ended whose spill file is gone died without a trace: mark them killed.

    A writer creates its spill file before its row and deletes it after ending, so a row
    without a file is a dead writer, unless its process still runs (a /tmp cleaner deleted
    the file under it: the process decides, ``journal.liveness``).
    """
    from pluto_offline.journal import end_writer
    from pluto_offline.journal.liveness import running_writers

    open_ids = [r[0] for r in j.conn.execute("SELECT id FROM writers WHERE ended_at IS NULL")]
    gone = [w for w in open_ids if not (j.spill_dir / f"{w}{SUFFIX}").exists()]
    if gone:
        gone = [w for w in gone if w not in running_writers(j)]
    if gone:
        with j.transaction():
            for w in gone:
                end_writer(j, w, "killed")


KILLED = {"status": "FAILED", "metadata": {"reason": "killed"}}


def _report_killed(j: Journal) -> None:
    """Journal FAILED ``{"reason": "killed"}`` for each run left unended by a writer that died
    (SIGKILL, OOM, node loss): no writer alive, one killed, no end journaled since the run's
    last open (the others only ``close()``d), and a death noticed since that open (a resume
    after a reported kill, which then ``close()``s, leaves the run open). Timed at the run's
    last event.

    Without it the server keeps such a run RUNNING until its reaper marks it, and the journal
    would read as delivered. It is an ordinary status event: a later resume (here or in
    another journal) still wins by time. Idempotent: once the FAILED is journaled, the run's
    last status change is an end, and the run is skipped.
    """
    from pluto_offline.journal import append_event

    candidates = _killed_runs(j)
    if not candidates:
        return
    live = _live(j)
    for run in candidates:
        with j.transaction():
            at = _kill_report_time(j, run, live)
            if at is not None:
                append_event(j, run, "status", time=at, payload=KILLED)


def killed_unreported(j: Journal, live: set[str] | None = None) -> set[int]:
    """Runs whose kill :func:`_report_killed` has still to journal (read-only): until it does,
    such a run is not delivered, though every event it has may be (a reader's check; the next
    recovery reports it once the run's other writers, e.g. an eval job's, have exited).
    ``live``: the live writer ids, when the caller has them already (else probed here)."""
    candidates = _killed_runs(j)
    if not candidates:
        return set()
    if live is None:
        live = _live(j)
    return {run for run in candidates if _kill_report_time(j, run, live) is not None}


def _killed_runs(j: Journal) -> list[int]:
    # a forked worker's writer dying is not the job dying (journal/forks.py)
    return [r[0] for r in j.conn.execute(
        "SELECT DISTINCT run FROM writers WHERE ended_how = 'killed' AND id NOT LIKE ?",
        (FORK_PREFIX + "%",))]


def _live(j: Journal) -> set[str]:
    from pluto_offline.journal import live_writer_ids as live_writers

    return live_writers(j)  # spill locks, and processes whose spill file was deleted


def _kill_report_time(j: Journal, run: int, live: set[str]) -> int | None:
    """When to time the run's kill report (its last event's time), or None: not due."""
    ids = [r[0] for r in j.conn.execute("SELECT id FROM writers WHERE run = ?", (run,))]
    if set(ids) & live:
        return None
    last = j.conn.execute(
        "SELECT kind, time FROM events WHERE run = ? AND kind IN ('create', 'resume', "
        "'status') ORDER BY seq DESC LIMIT 1", (run,)).fetchone()
    if last is None or last[0] == "status":
        return None
    noticed = j.conn.execute(
        "SELECT max(ended_at) FROM writers WHERE run = ? AND ended_how = 'killed' AND "
        "id NOT LIKE ?", (run, FORK_PREFIX + "%")).fetchone()[0]
    if noticed is None or noticed < last[1]:
        return None  # every death was known before the run's last open: reported then
    return j.conn.execute("SELECT max(time) FROM events WHERE run = ?", (run,)).fetchone()[0]
