"""What ``plutosync status`` reports: each run's local state and its delivery, from the journal.

Read-only: nothing here writes the journal, so it works on a copy on read-only media and on a
journal that jobs and a daemon are writing right now.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pluto_offline import journal
from pluto_offline.journal import drops, filerows, staged
from pluto_offline.journal.forks import forked
from syncd import lock

# Writer ends and journaled statuses -> the state shown to people.
_STATE_OF = {
    "COMPLETED": "finished",
    "FAILED": "failed",
    "TERMINATED": "terminated",
    "CANCELLED": "cancelled",
    "closed": "closed",
    "killed": "killed",
}
STATES = ("running", "finished", "failed", "terminated", "cancelled", "closed", "killed", "unknown")


@dataclass
class RunStatus:
    """One run's row in ``plutosync status --json`` (keys documented in docs/cli.md)."""

    journal: str
    project: str
    name: str | None
    run_id: str
    ref_kind: str
    state: str
    live_writers: int
    display_id: str | None
    server_id: int | None
    url: str | None
    events: int
    pending: int
    delivered: int
    rejected: int
    synced: bool
    attempts: int
    last_error: str | None
    next_try: float | None
    conflict: str | None
    reassert_due: float | None  # epoch seconds: final state to be sent again (a late request)
    daemon_pid: int | None  # the plutosync delivering this journal now, if any
    rejections: list[dict[str, Any]] = field(default_factory=list)
    # records the job's log() dropped, never journaled (a full disk): {"records", "reason"}
    dropped: list[dict[str, Any]] = field(default_factory=list)
    # logged files: pending, pending_bytes, unstaged, done, lost, rejected, resent, lost_files
    files: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def clock(epoch: float | None) -> str:
    """A wall time (epoch seconds) as people read it in a log or a table: ``HH:MM:SS`` local
    time; ``""`` for none."""
    return time.strftime("%H:%M:%S", time.localtime(epoch)) if epoch else ""


def local_state(writers: list[dict], live_ids: set[str], last_lifecycle: str | None) -> str:
    """The run's state on this machine.

    Any live writer → running. Otherwise the writers that ended the run (a terminal status, or
    killed: dead without an end) outrank those that only ``close()``d (an eval job attached to
    the run); among them the most recently opened wins, so a run killed and then resumed to
    completion reads ``finished``. With no writer rows, the last journaled status/close decides.
    """
    if any(w["id"] in live_ids for w in writers):
        return "running"
    # a forked worker's writer never ends the run, however it went (journal/forks.py)
    enders = [w for w in writers if w["ended_how"] != "closed" and not forked(w["id"])]
    if enders:
        last = max(enders, key=lambda w: (w["opened_at"], w["ended_at"] or 0))
        if last["ended_at"] is None:
            return "killed"  # dead (no spill lock) and never ended: SIGKILL, OOM, node loss
        return _STATE_OF.get(last["ended_how"] or "", "unknown")
    if writers:
        return "closed"
    return _STATE_OF.get(last_lifecycle or "", "unknown")



def journal_status(j: journal.Journal) -> list[RunStatus]:
    """One :class:`RunStatus` per run in the journal, in creation order."""
    counts = journal.event_counts(j)
    live_ids = journal.live_writer_ids(j)
    by_run: dict[int, list[dict]] = {}
    for w in journal.writers(j):
        by_run.setdefault(w["run"], []).append(w)
    lifecycle = journal.last_lifecycle(j)
    # a killed writer's FAILED not journaled yet (its run's eval job was still running at the
    # last recovery): the run is not delivered until it is (chaos seed 1016)
    kills = journal.kills_to_report(j, live_ids)
    rejections: dict[int, list[dict]] = {}
    for r in journal.rejected_events(j):
        rejections.setdefault(r["run"], []).append(
            {"seq": r["seq"], "kind": r["kind"], "code": r["code"], "reason": r["reason"]}
        )
    daemon = lock.holder(j.path)
    dropped: dict[int, list[dict]] = {}
    for d in drops.dropped(j):
        dropped.setdefault(d.run, []).append({"records": d.records, "reason": d.reason})
    out = []
    for run in journal.all_runs(j):
        c = counts.get(run.key, {"total": 0, "pending": 0, "rejected": 0})
        writers = by_run.get(run.key, [])
        out.append(RunStatus(
            journal=str(j.path),
            project=run.project,
            name=run.name,
            run_id=run.run_id,
            ref_kind=run.ref_kind,
            state=local_state(writers, live_ids, lifecycle.get(run.key)),
            live_writers=sum(w["id"] in live_ids for w in writers),
            display_id=run.display_id,
            server_id=run.server_id,
            url=run.url,
            events=c["total"],
            pending=c["pending"],
            # acked events minus the rejected ones (rejected events are acked to move past them)
            delivered=max(0, c["total"] - c["pending"] - c["rejected"]),
            rejected=c["rejected"],
            synced=(c["pending"] == 0 and c["rejected"] == 0 and run.reassert_due is None
                    and run.key not in kills),
            attempts=run.attempts,
            last_error=run.last_error,
            next_try=run.next_try,
            conflict=run.conflict,
            reassert_due=run.reassert_due,
            daemon_pid=daemon if daemon and daemon > 0 else None,
            rejections=rejections.get(run.key, []),
            dropped=dropped.get(run.key, []),
        ))
    _add_files(j, out)
    return out


def _add_files(j: journal.Journal, rows: list[RunStatus]) -> None:
    """Each run's logged files (docs/media.md): a run with files still to upload, refused or
    lost (never deliverable) is not synced; lost ones are listed with their reason."""
    counts = filerows.counts(j)
    lost: dict[int, list[dict]] = {}
    for f in filerows.lost_files(j):
        lost.setdefault(f["run"], []).append(
            {"log_name": f["log_name"], "file_name": f["file_name"], "reason": f["reason"]})
    for run, row in zip(journal.all_runs(j), rows, strict=True):
        c = counts.get(run.key)
        if c is None:
            continue
        row.files = {**asdict(c), "lost_files": lost.get(run.key, [])}
        # bytes only another copy holds (an export made before staging) are that copy's to
        # deliver: listed, but not a loss of this journal's (chaos seed 1122)
        lost_here = any(staged.lost_here(f["reason"]) for f in lost.get(run.key, []))
        row.synced = row.synced and not c.pending and not c.rejected and not lost_here


def live_run_keys(j: journal.Journal) -> set[int]:
    """Keys of runs that have at least one writer process alive right now."""
    live = journal.live_writer_ids(j)
    if not live:
        return set()
    return {w["run"] for w in journal.writers(j) if w["id"] in live}


def summary(rows: list[RunStatus]) -> dict[str, int]:
    """Counts for the line under the table (and for ``--check``)."""
    return {
        "runs": len(rows),
        "synced": sum(r.synced for r in rows),
        "pending": sum(r.pending > 0 for r in rows),
        "reassert": sum(r.reassert_due is not None for r in rows),
        "rejected": sum(r.rejected > 0 for r in rows),
        "lost": sum(r.files.get("lost", 0) > 0 for r in rows),
        "running": sum(r.state == "running" for r in rows),
    }


def journal_label(path: Path) -> str:
    return str(path.parent if path.name == journal.JOURNAL_FILE else path)
