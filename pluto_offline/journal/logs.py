"""Console lines in the journal: ``logs`` events (docs/journal.md).

A ``logs`` event's payload is NDJSON, exactly the body of ``POST /ingest/logs``: one
``{"time": ms, "message": str, "lineNumber": int, "logType": "INFO" | "ERROR"}`` per line,
at most ``LINES_PER_EVENT`` lines; its ``time`` is its first line's and its ``step`` its last
line's ``lineNumber``, so a process continuing a run's console numbers on from there.

    with j.transaction():
        append_logs(j, run_key, [(1732950000123, "epoch 1", "INFO", 1)])
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from pluto_offline.journal.store import Journal

LINES_PER_EVENT = 2000
_compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def append_logs(j: Journal, run: int, lines: Sequence[tuple[int, str, str, int]]) -> None:
    """Append ``(time_ms, message, logType, lineNumber)`` lines as ``logs`` events (inside a
    transaction)."""
    rows = []
    for i in range(0, len(lines), LINES_PER_EVENT):
        chunk = lines[i:i + LINES_PER_EVENT]
        # one C-level encode: '},{"time":' occurs only between two lines (a '"' in a
        # message is escaped)
        text = _compact([{"time": t, "message": m, "lineNumber": n, "logType": k}
                         for t, m, k, n in chunk])[1:-1].replace('},{"time":', '}\n{"time":')
        rows.append((run, "logs", chunk[0][0], chunk[-1][3], text))
    j.conn.executemany("INSERT INTO events (run, kind, time, step, payload) VALUES (?, ?, ?, ?, ?)",
                       rows)


def last_line_number(j: Journal, run: int) -> int:
    """The highest console ``lineNumber`` journaled for a run (0 for none)."""
    row = j.conn.execute("SELECT max(step) FROM events WHERE run = ? AND kind = 'logs'",
                         (run,)).fetchone()
    return int(row[0] or 0)
