"""The console helper's journal side: lines gathered, committed as ``logs`` events.

Lines are committed every ``COMMIT_S`` seconds (or at once when ``BATCH`` are waiting, or when
the job asks: a flush, its end), numbered on from the run's last journaled line. When the
journal cannot be written (a full disk, a journal removed), the lines wait in memory and the
commit is tried again every ``RETRY_S``; beyond ``MAX_PENDING`` waiting lines the oldest are
dropped and counted. Either is said once on the helper's stderr (the job's original stderr).
"""

from __future__ import annotations

import os
import sqlite3
import time

from pluto_offline.journal.logs import append_logs, last_line_number
from pluto_offline.journal.store import Journal, JournalError
from pluto_offline.journal.writes import latest_time

COMMIT_S = 0.05
RETRY_S = 1.0
BATCH = 20_000
MAX_PENDING = 1_000_000


class LogSink:
    """``(time_ms, message, logType, lineNumber)`` lines on their way into the journal."""

    def __init__(self, journal: str, run: int, run_id: str | None = None) -> None:
        self.run = run
        self.pending: list[tuple[int, str, str, int]] = []
        self.dropped = 0
        self._due = 0.0  # monotonic time of the next commit, while lines wait
        self._told: set[str] = set()
        self.j: Journal | None = None
        self.line = 0
        # lines are timed as the writer times records: never before the run's latest time
        # (a clock stepped back), so the server, which reads lines by time, keeps their order
        self._t_last = 0
        try:
            self.j = Journal.open(journal, create=False)
            if run_id is not None and not _names(self.j, run, run_id):
                # the journal was replaced before this process opened it: not the run's
                self.j.close()
                self.j = None
                self._say("open", f"the journal at {journal} no longer holds run {run_id} (it "
                          "was replaced): console lines are shown but not journaled")
                return
            self.line = last_line_number(self.j, run)
            self._t_last = latest_time(self.j, run)
        except (JournalError, sqlite3.Error, OSError) as exc:
            self._say("open", f"cannot open the journal ({exc}): console lines are shown but "
                      "not journaled")

    def add(self, messages: list[str], log_type: str) -> None:
        if not messages or self.j is None:
            return
        t = self._t_last = max(time.time_ns() // 1_000_000, self._t_last)
        start = self.line + 1
        self.line += len(messages)
        if not self.pending:
            self._due = time.monotonic() + COMMIT_S
        self.pending.extend((t, m, log_type, n) for n, m in enumerate(messages, start))
        if len(self.pending) > MAX_PENDING:
            over = len(self.pending) - MAX_PENDING
            del self.pending[:over]
            self.dropped += over

    def wait_ms(self) -> int | None:
        """How long the helper may wait for input before a commit is due (poll's timeout)."""
        if not self.pending:
            return None
        return max(0, int((self._due - time.monotonic()) * 1000) + 1)

    def commit_if_due(self) -> None:
        if self.pending and (len(self.pending) >= BATCH or time.monotonic() >= self._due):
            self.commit()

    def commit(self) -> bool:
        """Journal every waiting line; False (they keep waiting) when the journal refuses."""
        if not self.pending or self.j is None:
            return True
        try:
            with self.j.transaction():
                append_logs(self.j, self.run, self.pending)
        except (JournalError, sqlite3.Error, OSError) as exc:
            self._due = time.monotonic() + RETRY_S
            self._say("write", f"cannot write the journal ({exc}): console lines wait in memory "
                      "and are written once it can be")
            return False
        self.pending = []
        if "write" in self._told:
            self._told.discard("write")
            self._say("again", "the journal can be written again: the console lines that waited "
                      f"are journaled{f' ({self.dropped} dropped, over the limit)' if self.dropped else ''}")
            self._told.discard("again")
        return True

    def close(self) -> None:
        """At the end of the job's streams: a last commit (tried a few times), then close."""
        for _ in range(5):
            if self.commit():
                break
            time.sleep(RETRY_S)
        if self.pending:
            self._say("lost", f"{len(self.pending)} console lines could not be journaled")
        if self.j is not None:
            self.j.close()

    def _say(self, what: str, text: str) -> None:
        if what in self._told:
            return
        self._told.add(what)
        try:
            os.write(2, f"pluto_offline console: {text}\n".encode(errors="replace"))
        except OSError:
            pass


def _names(j: Journal, run: int, run_id: str) -> bool:
    """Whether run ``run`` of this journal is ``run_id``."""
    row = j.conn.execute("SELECT run_id FROM runs WHERE key = ?", (run,)).fetchone()
    return row is not None and row[0] == run_id
