"""What plutosync reads and writes: pending events, acknowledgements, rejections."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from pluto_offline.journal.forks import forked
from pluto_offline.journal.store import Event, Journal, RunRow, _run_rows, now_ms

# How a daemon's ``last_error`` ends when it waits for a fix and a restart (a refused key, a
# proxy asking for its login, a wrong server address): it cannot deliver until then, so a job
# waiting for delivery (``finish(timeout=)``) stops at once.
WAITS_FOR_RESTART = "and restart plutosync; nothing is dropped meanwhile"


def waits_for_restart(last_error: str | None) -> bool:
    """Whether a recorded ``last_error`` says the daemon cannot deliver until restarted."""
    return bool(last_error) and last_error.endswith(WAITS_FOR_RESTART)


def runs_with_pending(j: Journal) -> list[RunRow]:
    """Runs that have events after their acknowledged seq, oldest first."""
    return _run_rows(
        j,
        "WHERE EXISTS (SELECT 1 FROM events e WHERE e.run = r.key "
        "AND e.seq > coalesce(d.acked_seq, 0))",
        (),
    )


def runs_to_reassert(j: Journal) -> list[RunRow]:
    """Runs whose final state plutosync is still to send again (see :func:`note_reassert`)."""
    if j.schema < 2:  # an older journal opened read-only: it cannot hold any
        return []
    return _run_rows(j, "WHERE d.reassert_due IS NOT NULL", ())


def note_reassert(j: Journal, run: int, due: float, kinds: Iterable[str]) -> bool:
    """Note that the run's final ``kinds`` (config, tags, status) must be sent again at
    wall time ``due`` (seconds): a request that got no answer may still land late and undo
    them. Kept in the journal, so a restarted daemon still does it and a drained journal
    still counts it as pending. Merged with a note already there (the later ``due``, the
    union of the kinds) in one transaction, so the delivery and heartbeat threads may both
    note. Returns True when the run had no note yet."""
    with j.transaction():
        _ensure_delivery(j, run)
        old_due, old_kinds = j.conn.execute(
            "SELECT reassert_due, reassert_kinds FROM delivery WHERE run = ?", (run,)).fetchone()
        kinds = set(kinds)
        if old_due is not None:
            due = max(due, old_due)
            kinds |= set(filter(None, (old_kinds or "").split(",")))
        j.conn.execute(
            "UPDATE delivery SET reassert_due = ?, reassert_kinds = ?, updated_at = ? WHERE run = ?",
            (due, ",".join(sorted(kinds)), now_ms(), run),
        )
    return old_due is None


def clear_reassert(j: Journal, run: int, due: float | None = None) -> None:
    """The run's final state was sent again after its late requests could land: done.
    ``due``: clear only the note read with that due time, not one another thread (the
    heartbeat) has pushed later meanwhile."""
    with j.transaction():
        j.conn.execute(
            "UPDATE delivery SET reassert_due = NULL, reassert_kinds = NULL, updated_at = ? "
            "WHERE run = ? AND (? IS NULL OR reassert_due = ?)", (now_ms(), run, due, due),
        )


def server_fields(j: Journal, run: int) -> tuple | None:
    """``(server_id, display_id, url)`` the daemon recorded for the run, or None: what the SDK
    shows as ``run.id``, ``run.display_id``, ``run.url``."""
    return j.conn.execute(
        "SELECT server_id, display_id, url FROM delivery WHERE run = ?", (run,)).fetchone()


def all_runs(j: Journal) -> list[RunRow]:
    return _run_rows(j, "", ())


def pending_events(j: Journal, run: int, *, after: int, limit: int = 1000) -> list[Event]:
    """The run's events with ``seq > after``, in seq order."""
    rows = j.conn.execute(
        "SELECT seq, run, kind, time, step, payload FROM events "
        "WHERE run = ? AND seq > ? ORDER BY seq LIMIT ?",
        (run, after, limit),
    ).fetchall()
    return [Event(*r) for r in rows]


def last_event(j: Journal, run: int, kinds: Iterable[str], *, before: int) -> Event | None:
    """The run's latest event of one of ``kinds`` with ``seq < before``, or None.

    The daemon uses it to find the run's latest status change (``LIFECYCLE_KINDS``) when it
    re-asserts the run's final state.
    """
    kinds = list(kinds)
    marks = ",".join("?" * len(kinds))
    row = j.conn.execute(
        f"SELECT seq, run, kind, time, step, payload FROM events WHERE run = ? AND seq < ? "
        f"AND kind IN ({marks}) ORDER BY seq DESC LIMIT 1",
        (run, before, *kinds),
    ).fetchone()
    return Event(*row) if row else None


OPENERS = ("create", "resume")  # the events that open a run (RUNNING)
LIFECYCLE_KINDS = (*OPENERS, "status")  # the events that change a run's status


def lifecycle_time(j: Journal, run: int, seq: int) -> int:
    """The time (epoch ms) the status change of event ``seq`` counts as happening.

    Its journaled time, but never earlier than an earlier status change of the run in this
    journal: within one journal, call order is the order (a clock stepped back between a job
    and its resume must not make the resume older than the end it follows).
    """
    marks = ",".join("?" * len(LIFECYCLE_KINDS))
    row = j.conn.execute(
        f"SELECT max(time) FROM events WHERE run = ? AND seq <= ? AND kind IN ({marks})",
        (run, seq, *LIFECYCLE_KINDS)).fetchone()
    return int(row[0] or 0)


def only_attached(j: Journal, run: int) -> bool:
    """Whether this journal only attached to the run: every writer ended by ``close()``
    (none alive, none ended it, none killed) and no status journaled. Such a journal (an eval
    job) must not create the run on the server: the journal that started it names it."""
    rows = [(w, how) for w, how in j.conn.execute(
        "SELECT id, ended_how FROM writers WHERE run = ?", (run,)) if not forked(w)]
    if not rows or any(how != "closed" for _, how in rows):
        return False
    if j.conn.execute("SELECT 1 FROM events WHERE run = ? AND kind = 'status' LIMIT 1",
                      (run,)).fetchone():
        return False
    return not ({w for w, _ in rows} & live_writer_ids(j))


def reject_part(j: Journal, event: Event, part: str, *, code: int | None, reason: str) -> None:
    """Record that the server refused ``part`` of an event (a create's config or tags) while
    the rest of it was delivered; the event itself is acknowledged as usual. Several parts
    of one event share its row (kinds joined by ``,``, reasons by ``; ``)."""
    with j.transaction():
        _ensure_delivery(j, event.run)
        j.conn.execute(
            "INSERT INTO rejected (seq, run, kind, code, reason, at) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (seq) DO UPDATE SET kind = kind || ',' || excluded.kind, "
            "reason = reason || '; ' || excluded.reason",
            (event.seq, event.run, part, code, reason, now_ms()),
        )


def _ensure_delivery(j: Journal, run: int) -> None:
    j.conn.execute("INSERT OR IGNORE INTO delivery (run) VALUES (?)", (run,))


def ack(j: Journal, run: int, upto_seq: int, **server: Any) -> None:
    """Advance the run's acknowledged seq and record server fields, in one transaction.

    ``server`` may hold ``server_id``, ``display_id``, ``number``, ``url``, ``conflict``.
    Clears the last error: the server answered.
    """
    allowed = {"server_id", "display_id", "number", "url", "conflict"}
    bad = set(server) - allowed
    if bad:
        raise ValueError(f"unknown delivery fields {sorted(bad)}")
    with j.transaction():
        _ensure_delivery(j, run)
        sets = ["acked_seq = max(acked_seq, ?)", "attempts = 0", "last_error = NULL",
                "next_try = NULL", "updated_at = ?"]
        args: list[Any] = [upto_seq, now_ms()]
        for k, v in server.items():
            sets.append(f"{k} = ?")
            args.append(v)
        j.conn.execute(f"UPDATE delivery SET {', '.join(sets)} WHERE run = ?", (*args, run))


def reject(j: Journal, event: Event, *, code: int | None, reason: str, ack_seq: bool = True) -> None:
    """Record an event the server refused for good and (by default) move past it."""
    with j.transaction():
        _ensure_delivery(j, event.run)
        j.conn.execute(
            "INSERT OR REPLACE INTO rejected (seq, run, kind, code, reason, at) VALUES (?, ?, ?, ?, ?, ?)",
            (event.seq, event.run, event.kind, code, reason, now_ms()),
        )
        if ack_seq:
            j.conn.execute(
                "UPDATE delivery SET acked_seq = max(acked_seq, ?), updated_at = ? WHERE run = ?",
                (event.seq, now_ms(), event.run),
            )


def unreject(j: Journal, seqs: Iterable[int]) -> None:
    """Forget the refusals of ``seqs``: they were sent again and the server took them."""
    with j.transaction():
        j.conn.executemany("DELETE FROM rejected WHERE seq = ?", [(s,) for s in seqs])


def rereject(j: Journal, seq: int, *, code: int | None, reason: str) -> None:
    """A refused event (or part of one) sent again was refused again: the new reason, now."""
    with j.transaction():
        j.conn.execute("UPDATE rejected SET code = ?, reason = ?, at = ? WHERE seq = ?",
                       (code, reason, now_ms(), seq))


def redeliver_run(j: Journal, run: int, from_seq: int) -> None:
    """Deliver a run again from event ``from_seq`` on: its refusals from there are forgotten
    and its acknowledged (and sent) seq moved back before it. For a run the server never
    opened (its create or resume was refused), so nothing of it from there reached the server.
    """
    with j.transaction():
        _ensure_delivery(j, run)
        j.conn.execute("DELETE FROM rejected WHERE run = ? AND seq >= ?", (run, from_seq))
        j.conn.execute(
            "UPDATE delivery SET acked_seq = min(acked_seq, ?), sent_seq = min(sent_seq, ?), "
            "updated_at = ? WHERE run = ?", (from_seq - 1, from_seq - 1, now_ms(), run))


def mark_sent(j: Journal, run: int, seq: int) -> None:
    """Record, before sending, that a request carrying events up to ``seq`` is going out.

    After a crash, ``sent_seq > acked_seq`` tells the daemon the server may already have the
    request: a ``create`` answered ``resumed: true`` is then our own, not a conflict.
    """
    with j.transaction():
        _ensure_delivery(j, run)
        j.conn.execute(
            "UPDATE delivery SET sent_seq = max(sent_seq, ?) WHERE run = ?", (seq, run)
        )


def unmark_sent(j: Journal, run: int, seq: int, before: int) -> None:
    """Undo :func:`mark_sent` of ``seq`` (back to ``before``): the server answered that it
    applied nothing of that request (a refusal, an error page), so it cannot land later."""
    with j.transaction():
        j.conn.execute("UPDATE delivery SET sent_seq = ? WHERE run = ? AND sent_seq = ?",
                       (before, run, seq))


def sent_seq(j: Journal, run: int) -> int:
    row = j.conn.execute("SELECT sent_seq FROM delivery WHERE run = ?", (run,)).fetchone()
    return row[0] if row else 0


def record_error(j: Journal, run: int, error: str, *, next_try: float | None = None,
                 conflict: str | None = None) -> None:
    """Note a failed attempt (shown by ``plutosync status``); nothing is acknowledged."""
    with j.transaction():
        _ensure_delivery(j, run)
        j.conn.execute(
            "UPDATE delivery SET attempts = attempts + 1, last_error = ?, next_try = ?, "
            "conflict = coalesce(?, conflict), updated_at = ? WHERE run = ?",
            (error, next_try, conflict, now_ms(), run),
        )


def rejected_events(j: Journal, run: int | None = None) -> list[dict]:
    sql = "SELECT seq, run, kind, code, reason, at FROM rejected"
    args: tuple = ()
    if run is not None:
        sql += " WHERE run = ?"
        args = (run,)
    return list(j.db.query(sql + " ORDER BY seq", args))


def event_counts(j: Journal) -> dict[int, dict[str, int]]:
    """Per run key: ``total``, ``pending`` (after the acked seq) and ``rejected`` event counts."""
    out: dict[int, dict[str, int]] = {}
    for run, total, pending in j.conn.execute(
        "SELECT e.run, count(*), sum(e.seq > coalesce(d.acked_seq, 0)) FROM events e "
        "LEFT JOIN delivery d ON d.run = e.run GROUP BY e.run"
    ):
        out[run] = {"total": total, "pending": pending or 0, "rejected": 0}
    for run, n in j.conn.execute("SELECT run, count(*) FROM rejected GROUP BY run"):
        out.setdefault(run, {"total": 0, "pending": 0, "rejected": 0})["rejected"] = n
    return out


def writers(j: Journal, run: int | None = None) -> list[dict]:
    sql = "SELECT id, run, pid, host, opened_at, ended_at, ended_how FROM writers"
    args: tuple = ()
    if run is not None:
        sql += " WHERE run = ?"
        args = (run,)
    return list(j.db.query(sql, args))


# What retention may delete: acknowledged, old, not rejected (kept beside the server's
# reason), not a run's newest event of its kind (a later local resume continues its step from
# the newest metrics; plutosync reads the last status), not of a live run.
_PRUNABLE = """
FROM events WHERE time < ?
  AND seq <= coalesce((SELECT acked_seq FROM delivery d WHERE d.run = events.run), 0)
  AND seq NOT IN (SELECT seq FROM rejected)
  AND seq NOT IN (SELECT max(seq) FROM events GROUP BY run, kind)
  AND run NOT IN ({live})
"""


def _prunable(older_than_ms: int, live_runs: Iterable[int]) -> tuple[str, tuple]:
    live = sorted(live_runs)
    # run keys are >= 1, so -1 stands for "no live run" (NOT IN (NULL) would match nothing)
    where = _PRUNABLE.format(live=",".join("?" * len(live)) or "-1")
    return where, (now_ms() - older_than_ms, *live)


def prunable(j: Journal, *, older_than_ms: int, live_runs: Iterable[int] = ()) -> tuple[int, int]:
    """``(events, runs)`` that :func:`prune` would delete now."""
    where, args = _prunable(older_than_ms, live_runs)
    row = j.conn.execute(f"SELECT count(*), count(DISTINCT run) {where}", args).fetchone()
    return row[0], row[1]


def prune(j: Journal, *, older_than_ms: int, live_runs: Iterable[int] = (),
          batch: int = 5_000) -> int:
    """Delete acknowledged events older than ``older_than_ms`` ago; returns how many.

    Unacknowledged and rejected events are never deleted, nor a run's newest event of each
    kind, nor anything of a run in ``live_runs``. Deletes ``batch`` rows per transaction, so
    jobs writing the journal wait at most a moment for the write lock.
    """
    where, args = _prunable(older_than_ms, live_runs)
    total = 0
    while True:
        with j.transaction():
            n = j.conn.execute(
                f"DELETE FROM events WHERE seq IN (SELECT seq {where} LIMIT {int(batch)})", args
            ).rowcount
        total += n
        if n < batch:
            return total


def last_lifecycle(j: Journal) -> dict[int, str]:
    """Per run key, its last journaled ``status`` value, or ``"closed"`` for a ``close``."""
    out: dict[int, str] = {}
    rows = j.conn.execute(
        "SELECT run, kind, payload FROM events WHERE seq IN "
        "(SELECT max(seq) FROM events WHERE kind IN ('status', 'close') GROUP BY run)"
    )
    for run, kind, payload in rows:
        if kind == "close":
            out[run] = "closed"
            continue
        try:
            data = json.loads(payload) if payload else None
        except ValueError:
            data = None
        status = data.get("status") if isinstance(data, dict) else data
        out[run] = status if isinstance(status, str) else ""
    return out


# --------------------------------------------------------------------------- writers' liveness


def live_writer_ids(j: Journal) -> set[str]:
    """Ids of writers whose process is alive: each holds a lock on its spill file, or (its
    spill file deleted under it) its process still runs (:mod:`pluto_offline.journal.liveness`)."""
    from pluto_offline import recovery
    from pluto_offline.journal.liveness import running_writers

    return recovery.live_writer_ids(j.spill_dir) | running_writers(j)


def kills_to_report(j: Journal, live: set[str] | None = None) -> set[int]:
    """Keys of runs left by a killed writer whose FAILED ``{"reason": "killed"}`` the next
    :func:`recover` is still to journal (read-only): not delivered until it has been.
    ``live``: :func:`live_writer_ids`, when the caller has read it already."""
    from pluto_offline import recovery

    return recovery.killed_unreported(j, live)


def recover(j: Journal) -> int:
    """Fold the spill files of dead writers into ``events`` and mark those writers ``killed``.

    Every reader calls this before reading (the SDK at ``init``, plutosync on each pass), so
    that ``log()`` calls that returned before a SIGKILL are delivered. Returns records folded.
    """
    from pluto_offline import recovery
    from pluto_offline.journal import filerows

    # first the files of dead writers (docs/media.md): a killed run's status, appended by the
    # spill recovery below, then comes after them and waits for their delivery
    filerows.recover(j, live_writer_ids(j))
    return recovery.recover_orphans(j)

