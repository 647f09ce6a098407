"""Records ``log()`` could not keep, counted per writer and reason (issue 12 item 14).

When the journal cannot be written (a full disk) and a writer's spill file is full, ``log()``
drops records rather than block training. Each one is counted; the counts reach this table as
soon as the journal takes a write again (the writer's next fold), or by recovery from the
spill file's header after the process ended. ``plutosync status`` shows them per run::

    with j.transaction():
        record(j, writer_id, run_key, {"disk full": 11364})
    dropped(j)   # [Dropped(run=1, reason='disk full', records=11364)]

The table is optional: made by the first writer that drops anything (``CREATE TABLE IF NOT
EXISTS``, so no schema version is needed: an older reader ignores it, and a journal without
it reads as nothing dropped). Counts are cumulative per writer, so recording one twice (a
fold, then recovery of the same spill) never counts twice.
"""

from __future__ import annotations

from typing import NamedTuple

from pluto_offline.journal.store import Journal, now_ms


class Dropped(NamedTuple):
    run: int
    reason: str
    records: int


def record(j: Journal, writer_id: str, run: int, counts: dict[str, int]) -> None:
    """Set the writer's cumulative drop counts (reason -> records); call inside a transaction.

    A count never goes down: the larger of the stored and the given one is kept."""
    if not counts:
        return
    j.conn.execute(
        "CREATE TABLE IF NOT EXISTS dropped ("
        " writer  TEXT NOT NULL,"     # writers.id
        " run     INTEGER NOT NULL,"  # runs.key
        " reason  TEXT NOT NULL,"     # 'disk full', 'journal not writable', 'record too large'
        " records INTEGER NOT NULL,"  # dropped by this writer for this reason (cumulative)
        " at      INTEGER NOT NULL,"  # epoch ms of the last update
        " PRIMARY KEY (writer, reason))")
    j.conn.executemany(
        "INSERT INTO dropped (writer, run, reason, records, at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (writer, reason) DO UPDATE SET records = max(records, excluded.records), "
        "at = excluded.at",
        [(writer_id, run, reason, n, now_ms()) for reason, n in counts.items() if n > 0])


def dropped(j: Journal) -> list[Dropped]:
    """Records dropped per run and reason (summed over writers), in run order; works on a
    read-only journal and on one without the table."""
    exists = j.conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'dropped'").fetchone()
    if not exists:
        return []
    return [Dropped(*row) for row in j.conn.execute(
        "SELECT run, reason, sum(records) FROM dropped GROUP BY run, reason "
        "ORDER BY run, reason")]


def describe(records: int, reason: str) -> str:
    """How people read one count: ``11364 records dropped: disk full``."""
    return f"{records} record{'s' * (records != 1)} dropped: {reason}"
