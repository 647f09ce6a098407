"""What a run's journal says about its config, tags and resends over time (for the daemon's
by-time rules across journals: docs/delivery.md).

>>> for time_ms, delta in config_history(j, key): ...
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from pluto_offline.journal.store import Journal


def config_history(j: Journal, run: int) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(time_ms, config delta)`` of the run in journal order: the config its create or
    resume carried, then every ``config`` event (each deep-merged over the ones before)."""
    rows = j.conn.execute(
        "SELECT kind, time, payload FROM events WHERE run = ? "
        "AND kind IN ('create', 'resume', 'config') ORDER BY seq", (run,))
    for kind, time_ms, payload in rows:
        data = json.loads(payload) if payload else None
        delta = data.get("config") if kind != "config" and isinstance(data, dict) else data
        if isinstance(delta, dict) and delta:
            yield int(time_ms), delta


def tags_time(j: Journal, run: int, *, before: int | None = None) -> int | None:
    """The time (ms) the run's tags were last set in this journal (a ``tags`` event, or the
    create's tags), counting events with ``seq < before``; None when they never were."""
    rows = j.conn.execute(
        "SELECT kind, time, payload FROM events WHERE run = ? AND seq < ? "
        "AND kind IN ('create', 'tags') ORDER BY seq DESC",
        (run, before if before is not None else 1 << 62))
    for kind, time_ms, payload in rows:
        if kind == "tags":
            return int(time_ms)
        data = json.loads(payload) if payload else None
        if isinstance(data, dict) and data.get("tags"):
            return int(time_ms)
    return None


def note_resent(j: Journal, run: int, records: int) -> None:
    """Count records (NDJSON lines) of kinds the server does not deduplicate (data, logs) sent again
    because the request that carried them got no answer: the server may hold them twice.
    ``plutosync status`` shows the count; nothing else can tell (the server offers no
    read-back of them)."""
    if records <= 0 or j.schema < 3:
        return
    with j.transaction():
        j.conn.execute("INSERT OR IGNORE INTO delivery (run) VALUES (?)", (run,))
        j.conn.execute("UPDATE delivery SET resent = resent + ? WHERE run = ?", (records, run))


def resent(j: Journal, run: int) -> int:
    """How many records :func:`note_resent` counted for the run."""
    if j.schema < 3:
        return 0
    row = j.conn.execute("SELECT resent FROM delivery WHERE run = ?", (run,)).fetchone()
    return int(row[0]) if row else 0


def shared_run(j: Journal, run: int) -> bool:
    """Whether other journals may write this run too: it was resumed or attached to
    (``resume=True``, ``PLUTO_RUN_ID``, a server id), or the job chose its run id (journals
    written before the create said so count as chosen)."""
    rows = j.conn.execute(
        "SELECT kind, payload FROM events WHERE run = ? AND kind IN ('create', 'resume') "
        "ORDER BY seq", (run,))
    for kind, payload in rows:
        if kind == "resume":
            return True
        data = json.loads(payload) if payload else {}
        if not isinstance(data, dict) or data.get("resume") or data.get("chosen", True):
            return True
    return False
