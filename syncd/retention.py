"""Retention: delete acknowledged events once they are old, so a journal does not grow forever.

The rules, which every caller gets (``plutosync prune`` and the daemon's periodic pass):

- only events the server has acknowledged (``seq <= acked_seq``) and older than the age;
- never an unacknowledged event: it has not reached the server yet;
- nothing of a run that has a live writer: the job may still resume or read it;
- never a rejected event (its payload stays for inspection beside the server's reason);
- the staged bytes of a logged file only once the server has it (and old enough); never
  bytes a file not yet uploaded needs (docs/media.md);
- never a run's newest event of each kind: a later local resume continues its step counter
  from the newest ``metrics``/``data``, and the daemon reads the last journaled ``status``.

Deletion runs in small transactions so the jobs writing the journal wait at most a moment for
SQLite's write lock. Freed pages are reused by new events; the file does not shrink.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from pluto_offline import journal
from pluto_offline.journal import filerows
from syncd.runstate import live_run_keys

DEFAULT_AGE = "7d"
ENV_AGE = "PLUTOSYNC_RETENTION"
BATCH = 5_000
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass
class PruneResult:
    events: int  # deleted, or that would be with dry_run
    runs: int  # runs that lost (or would lose) events
    live_runs_skipped: int
    dry_run: bool
    files: int = 0  # staged files whose bytes were deleted (delivered, old enough)
    file_bytes: int = 0


def parse_duration(text: str) -> float:
    """``"7d"`` → seconds. Units: s, m, h, d, w; ``"0"`` is allowed (no unit needed)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text or "")
    if not m or (not m.group(2) and float(m.group(1)) != 0):
        raise ValueError(
            f"cannot read the duration {text!r}: write a number and a unit, "
            "s (seconds), m (minutes), h (hours), d (days) or w (weeks), e.g. 7d or 12h"
        )
    return float(m.group(1)) * _UNITS.get(m.group(2) or "s", 1)


def default_age_s() -> float:
    """The retention age from ``PLUTOSYNC_RETENTION`` (e.g. ``14d``), else 7 days.

    Raises ValueError with a clear message when the variable cannot be read.
    """
    text = os.environ.get(ENV_AGE) or DEFAULT_AGE
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ValueError(f"{ENV_AGE}: {exc}") from None


def prune_acked(j: journal.Journal, older_than_s: float, *, dry_run: bool = False) -> PruneResult:
    """Apply the retention rules above to an open, writable journal (read-only for dry_run)."""
    live = live_run_keys(j)
    age_ms = int(older_than_s * 1000)
    events, runs = journal.prunable(j, older_than_ms=age_ms, live_runs=live)
    if dry_run:
        blobs = filerows.prunable_blobs(j, older_than_ms=age_ms)
        return PruneResult(events, runs, len(live), True, len(blobs), sum(b for _, b in blobs))
    deleted = journal.prune(j, older_than_ms=age_ms, live_runs=live, batch=BATCH)
    # the staged bytes of delivered files (docs/media.md); never those still to upload
    files, size = filerows.prune_blobs(j, older_than_ms=age_ms)
    return PruneResult(deleted, runs, len(live), False, files, size)
