"""A writer's view of a journal it cannot write (a full disk): when to try again, what it dropped.

While SQLite refuses the writer's folds, retrying on every ``log()`` made each call ~1,400x
slower (issue 12 item 14: every call re-read the spill and failed the same transaction). So a
failed fold starts a backoff, from ``FIRST_S`` doubling up to ``CAP_S``: the writer thread
and ``log()``'s drain only try again once it has passed (``ready()``), while ``flush()`` and
the state changes always try, as their callers need the answer. Meanwhile ``log()`` keeps
records in the spill file; when that is full they are dropped, and counted here per reason
(``spill.DROP_REASONS``), for the spill header and the journal's ``dropped`` table::

    outage.failed(exc)        # a fold failed: back off (outage.failures counts them)
    if outage.ready(): ...    # time to try again
    outage.drop(exc)          # True for the first record dropped
    outage.recovered()        # a fold went through: (records dropped so far, reason) or None
"""

from __future__ import annotations

import time

from pluto_offline.spill import DROP_REASONS, SpillFull

FIRST_S = 0.05
CAP_S = 1.0  # space freed is noticed within this long
DISK_FULL, NOT_WRITABLE, TOO_LARGE = DROP_REASONS


class Outage:
    """Backoff and drop counts of one writer. Not thread-safe on its own: ``drop`` runs under
    the run's append lock, the rest under its fold lock; a torn read only delays a retry."""

    __slots__ = ("error", "counts", "journaled", "failures", "_delay", "_retry_at")

    def __init__(self) -> None:
        self.error: Exception | None = None  # the last fold's error while it lasts
        self.counts = [0, 0, 0]  # records dropped, per DROP_REASONS
        self.journaled = (0, 0, 0)  # the counts the journal holds
        # folds that failed in this writer's life: how often a full disk was tried (debugging;
        # bounded by the backoff, never one per log() call)
        self.failures = 0
        self._delay = 0.0
        self._retry_at = 0.0

    def ready(self) -> bool:
        """Whether a fold may be tried now (always, unless the last one failed recently)."""
        return self.error is None or time.monotonic() >= self._retry_at

    def failed(self, exc: Exception) -> None:
        """A fold failed with ``exc``: wait longer before the next try."""
        self.error = exc
        self.failures += 1
        self._delay = min(CAP_S, self._delay * 2 or FIRST_S)
        self._retry_at = time.monotonic() + self._delay

    def recovered(self) -> bool:
        """A fold went through: no more backoff. True if it ends an outage."""
        ended = self.error is not None
        self.error = None
        self._delay = 0.0
        return ended

    def reason(self) -> str:
        """Why the journal cannot be written, in the words of ``DROP_REASONS``."""
        return DISK_FULL if "the disk is full" in str(self.error) else NOT_WRITABLE

    def drop(self, exc: Exception) -> bool:
        """Count one record ``log()`` dropped because of ``exc``; True for the first one."""
        first = not any(self.counts)
        if isinstance(exc, SpillFull) and exc.reason != NOT_WRITABLE:
            reason = exc.reason
        else:
            reason = self.reason()
        self.counts[DROP_REASONS.index(reason)] += 1
        return first

    def unjournaled(self) -> bool:
        return tuple(self.counts) != self.journaled

    def by_reason(self) -> dict[str, int]:
        return {r: n for r, n in zip(DROP_REASONS, self.counts, strict=True) if n}

    def total(self) -> int:
        return sum(self.counts)
