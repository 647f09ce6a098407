"""What the SDK writes: runs, events and writers (plutosync only reads these)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from pluto_offline.journal import liveness
from pluto_offline.journal.payloads import unpack_metrics
from pluto_offline.journal.store import (
    EVENT_KINDS,
    Journal,
    RunRow,
    _run_rows,
    now_ms,
)


def add_run(
    j: Journal,
    *,
    project: str,
    run_id: str,
    name: str | None,
    ref_kind: str = "external",
    config: dict | None = None,
    tags: list[str] | None = None,
    created_at: int | None = None,
) -> int:
    """Insert a run row and return its key (call inside a transaction)."""
    cur = j.conn.execute(
        "INSERT INTO runs (project, run_id, ref_kind, name, created_at, config, tags) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            project, run_id, ref_kind, name, created_at or now_ms(),
            json.dumps(config or {}), json.dumps(tags or []),
        ),
    )
    return int(cur.lastrowid)


def find_run(j: Journal, *, project: str, run_id: str, ref_kind: str = "external") -> RunRow | None:
    """The run a (project, run_id) names, or None."""
    rows = _run_rows(j, "WHERE r.project = ? AND r.ref_kind = ? AND r.run_id = ?",
                     (project, ref_kind, run_id))
    return rows[0] if rows else None


def find_run_by_server_ref(
    j: Journal, *, server_id: int | None = None, display_id: str | None = None,
    project: str | None = None,
) -> RunRow | None:
    """A run the daemon has already created on the server, found by its server id or display id."""
    if server_id is not None:
        rows = _run_rows(j, "WHERE d.server_id = ?", (server_id,))
    else:
        rows = _run_rows(j, "WHERE upper(d.display_id) = upper(?) AND (? IS NULL OR r.project = ?)",
                         (display_id, project, project))
    return rows[0] if rows else None


def get_run(j: Journal, key: int) -> RunRow | None:
    rows = _run_rows(j, "WHERE r.key = ?", (key,))
    return rows[0] if rows else None


def append_event(
    j: Journal, run: int, kind: str, *, payload: Any = None, time: int | None = None,
    step: int | None = None, raw: bool = False,
) -> int:
    """Append one event and return its seq. ``payload`` is JSON-encoded unless ``raw``."""
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown event kind {kind!r}")
    text = payload if raw or payload is None else json.dumps(payload, allow_nan=True)
    cur = j.conn.execute(
        "INSERT INTO events (run, kind, time, step, payload) VALUES (?, ?, ?, ?, ?)",
        (run, kind, time or now_ms(), step, text),
    )
    return int(cur.lastrowid)


def append_events(j: Journal, rows: Iterable[tuple[int, str, int, int | None, str | None]]) -> None:
    """Append many ``(run, kind, time, step, payload_text)`` rows (the writer thread's path)."""
    j.conn.executemany(
        "INSERT INTO events (run, kind, time, step, payload) VALUES (?, ?, ?, ?, ?)", rows
    )


def set_run_state(j: Journal, key: int, *, config: dict | None = None, tags: list | None = None) -> None:
    """Record the run's current config / tags (what a later local resume starts from)."""
    if config is not None:
        j.conn.execute("UPDATE runs SET config = ? WHERE key = ?", (json.dumps(config), key))
    if tags is not None:
        j.conn.execute("UPDATE runs SET tags = ? WHERE key = ?", (json.dumps(tags), key))


def last_step(j: Journal, key: int) -> int | None:
    """The highest step journaled for a run (``metrics``/``data`` events carry their last step)."""
    row = j.conn.execute(
        "SELECT max(step) FROM events WHERE run = ? AND kind IN ('metrics', 'data')", (key,)
    ).fetchone()
    return row[0]


def latest_time(j: Journal, key: int) -> int:
    """The latest time (epoch ms) the journal holds for a run, 0 for none: its events' times
    and the records' times inside its last ``metrics`` and ``data`` events (a writer's records
    never go back in time, so its last event holds its latest). A writer opening the run starts
    its clock there (``Run._clock_ms``), so a clock stepped back never makes a later ``log()``
    of a step lose to an earlier one.
    """
    latest = j.conn.execute("SELECT max(time) FROM events WHERE run = ?", (key,)).fetchone()[0]
    times = [latest or 0]
    for kind in ("metrics", "data"):
        row = j.conn.execute("SELECT payload FROM events WHERE run = ? AND kind = ? "
                             "ORDER BY seq DESC LIMIT 1", (key, kind)).fetchone()
        if row is None or row[0] is None:
            continue
        if kind == "metrics":
            times += [t for _, t, _ in unpack_metrics(row[0])]
        else:
            times += [json.loads(line)["time"] for line in row[0].splitlines() if line]
    return max(times)


def add_writer(j: Journal, run: int, writer_id: str, pid: int, host: str) -> None:
    j.conn.execute(
        "INSERT INTO writers (id, run, pid, host, opened_at) VALUES (?, ?, ?, ?, ?)",
        (writer_id, run, pid, host, now_ms()),
    )
    liveness.register(j, writer_id, pid, host)  # its kernel and PID namespace, for readers


def end_writer(j: Journal, writer_id: str, how: str) -> None:
    """Mark a writer ended: ``how`` is a terminal status, ``closed`` or ``killed``."""
    j.conn.execute(
        "UPDATE writers SET ended_at = ?, ended_how = ? WHERE id = ? AND ended_at IS NULL",
        (now_ms(), how, writer_id),
    )

