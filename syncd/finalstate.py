"""A run's final state when several journals write it: the latest status-changing event wins.

Journals of one run (ranks on several nodes, Slurm allocations, an eval job) are delivered by
daemons that never talk to each other, in any order; the server is the only state they share
(docs/delivery.md). So each status-changing event is delivered against what the server holds,
and every status plutosync writes carries a marker in ``statusMetadata``::

    {"plutoOffline": {"time": ms, "status": "COMPLETED"}}                  # an end
    {"plutoOffline": {"time": ms, "status": "RUNNING", "end": {...}}}      # an open, and the
                                                                           # end it reopened

``time`` is the event's journaled time. A reopen by the server (a create with a known
externalId, or a resume) leaves ``statusMetadata`` as it was (pluto-api.md), so the marker of
the last status plutosync wrote survives it. Then :func:`opened` undoes a stale reopen (the
server knows a later end: put it back) and :func:`end` skips a stale end (the server knows a
later end or a later open). A later end of lower severity than the server's (COMPLETED after
FAILED) reopens the run first, since the server ignores it otherwise.

Every request can also be held by a proxy or a slow server and applied after later ones: an
open's RUNNING mark applied after another journal's end replaces that end's marker, and what
the server knew of the other journal is lost from it. So for a run several journals may write,
each change is first noted in the run's ledger (``lifecycle``, ledger.py), where nothing is
ever replaced; the journal whose request got no answer later re-reads it and puts the run's
latest change back (:func:`repair`).

Limits: the read and the write are two requests, so two daemons delivering status changes of
the same run at the same instant can interleave; clocks of different nodes are compared as
they are (skew larger than the gap between two events can order them wrongly); a status set
by someone else (the server's reaper, a person cancelling in the UI) carries no marker and
counts as older than any journaled event, except that a CANCELLED is never overridden.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

from pluto_offline import journal
from syncd import ledger
from syncd.client import PlutoClient

MARKER = "plutoOffline"
# The server's order (pluto-api.md): a lower-severity terminal status after a higher is ignored.
SEVERITY = {"COMPLETED": 1, "TERMINATED": 2, "CANCELLED": 3, "FAILED": 4}


_locks: dict[tuple[str, str], threading.RLock] = {}
_locks_guard = threading.Lock()


def run_lock(project: str, run_id: str) -> threading.RLock:
    """One lock per run in this process: a push delivering several journals of one run in
    parallel threads opens and ends it one journal at a time (a status check and the write
    it decides are then never interleaved with another thread's)."""
    with _locks_guard:
        return _locks.setdefault((project, run_id), threading.RLock())


STATUS_FIELDS = ("status", "statusMetadata")


@dataclass(frozen=True)
class Change:
    """One status change of a run: an open (``"RUNNING"``) or an end, at ``time`` (epoch
    ms), with the end's own ``metadata``."""

    time: int
    status: str
    metadata: dict | None = None

    def rank(self) -> tuple[int, bool, int]:
        """Later first; at the same ms an end over an open, a higher severity over a lower."""
        return (self.time, self.status in journal.TERMINAL_STATUSES,
                SEVERITY.get(self.status, 0))

    @classmethod
    def from_end(cls, end: Any) -> Change | None:
        """From a marker's ``end`` (``{"time", "status", "metadata"}``), None if malformed."""
        if not (isinstance(end, dict) and end.get("status") in journal.TERMINAL_STATUSES
                and isinstance(end.get("time"), int) and not isinstance(end.get("time"), bool)):
            return None
        meta = end.get("metadata")
        return cls(end["time"], end["status"], _own(meta))


@dataclass(frozen=True)
class ServerState:
    """What the server holds of a run's status (read from its details, never its config)."""

    status: str | None
    metadata: Any  # statusMetadata as stored
    mark_time: int | None  # the marker: when the status plutosync last wrote happened
    mark_status: str | None
    last_end: dict | None  # the last end plutosync wrote: {"time", "status", "metadata"}

    @classmethod
    def read(cls, client: PlutoClient, server_id: int) -> ServerState:
        return cls.parse(client.run_fields(server_id, STATUS_FIELDS))

    @classmethod
    def parse(cls, fields: dict[str, Any]) -> ServerState:
        meta = fields.get("statusMetadata")
        if isinstance(meta, str):  # a server handing the JSON column back as text
            try:
                meta = json.loads(meta)
            except ValueError:
                pass
        mark = meta.get(MARKER) if isinstance(meta, dict) else None
        if not (isinstance(mark, dict) and isinstance(mark.get("time"), int | float)
                and not isinstance(mark.get("time"), bool)):
            return cls(fields.get("status"), meta, None, None, None)
        status = mark.get("status")
        if status in journal.TERMINAL_STATUSES:
            last_end = {"time": int(mark["time"]), "status": status, "metadata": meta}
        else:
            last_end = mark.get("end") if isinstance(mark.get("end"), dict) else None
        return cls(fields.get("status"), meta, int(mark["time"]), status, last_end)

    def marked(self) -> list[Change]:
        """The changes the marker tells of: its own, and the end an open marker reopened."""
        if self.mark_time is None or not isinstance(self.mark_status, str):
            return []
        if self.mark_status in journal.TERMINAL_STATUSES:
            return [Change(self.mark_time, self.mark_status, _own(self.metadata))]
        end = Change.from_end(self.last_end)
        return [Change(self.mark_time, self.mark_status), *([end] if end else [])]


def change_of(j: journal.Journal, run: int, ev: journal.Event) -> Change | None:
    """The status change a create/resume or a terminal status event of ``run`` makes, at its
    lifecycle time (``journal.lifecycle_time``); None for any other event."""
    at = journal.lifecycle_time(j, run, ev.seq)
    if ev.kind in journal.OPENERS:
        return Change(at, "RUNNING")
    data = ev.data() or {}
    if ev.kind != "status" or data.get("status") not in journal.TERMINAL_STATUSES:
        return None
    meta = data.get("metadata")
    return Change(at, data["status"], meta if isinstance(meta, dict) else None)


def opened(client: PlutoClient, server_id: int, at: int) -> str:
    """After a create/resume journaled at ``at`` (epoch ms) set the run RUNNING.

    Returns ``"restored"`` (the server knew an end after ``at``: put back), ``"later"`` (it
    knew a later open: already RUNNING) or ``"running"`` (this open is the latest: marked).
    """
    state = ServerState.read(client, server_id)
    if state.mark_time is not None and state.mark_time > at:
        if state.mark_status in journal.TERMINAL_STATUSES:
            if state.status != state.mark_status:
                client.update_status(server_id, state.mark_status,
                                     metadata=json.dumps(state.metadata), at_ms=state.mark_time)
            return "restored"
        return "later"
    _write_open(client, server_id, at, state.last_end)
    return "running"


def reopen(client: PlutoClient, server_id: int, state: ServerState, at: int) -> None:
    """Set a run RUNNING again whose marker was lost or is an open (the reaper's FAILED),
    marked as opened at ``at`` (epoch ms) or at the marker's later open, keeping the end
    that open reopened: never a marker older than what the server knew."""
    if state.mark_status == "RUNNING" and state.mark_time is not None and state.mark_time > at:
        _write_open(client, server_id, state.mark_time, state.last_end)
    else:
        mark_open(client, server_id, at)


def mark_open(client: PlutoClient, server_id: int, at: int) -> None:
    """Mark a run this journal has just created as RUNNING since ``at`` (epoch ms)."""
    _write_open(client, server_id, at, None)


def end(client: PlutoClient, server_id: int, status: str, metadata: dict | None,
        at: int) -> str:
    """Deliver a terminal ``status`` journaled at ``at`` unless something later is known.

    Returns ``"sent"``, ``"superseded"`` (a later end or open is on the server: nothing sent)
    or ``"present"`` (this very end is there already). ``metadata`` is the event's own (a
    traceback, an exit code, a signal); the marker is added to it.
    """
    state = ServerState.read(client, server_id)
    if state.mark_status == status and state.mark_time == at and state.status == status:
        return "present"
    if state.mark_time is not None and state.mark_time > at:
        return "superseded"
    _write_end(client, server_id, state, Change(at, status, metadata))
    return "sent"


def repair(client: PlutoClient, server_id: int, own: Change | None, *,
           ledgered: bool) -> Change | None:
    """Put back the run's latest status change after a request that may have landed late.

    ``own`` is this journal's latest change; ``ledgered``: other journals may write the run,
    whose changes are then read from the ledger too (``lifecycle``: one streamed read, past
    the config). The latest of these and of the server's marker wins, as in :func:`end` and
    :func:`opened`. Returns the change written, or None when the server holds it already.
    """
    fields = client.run_fields(
        server_id, STATUS_FIELDS + ((ledger.LIFECYCLE_FIELD,) if ledgered else ()))
    state = ServerState.parse(fields)
    known = [*([own] if own else []), *state.marked(),
             *(Change(*c) for c in ledger.changes(fields.get(ledger.LIFECYCLE_FIELD)))]
    if not known:
        return None
    latest = max(known, key=Change.rank)
    if latest.status in journal.TERMINAL_STATUSES:
        if (state.status, state.mark_status, state.mark_time) == (
                latest.status, latest.status, latest.time):
            return None
        _write_end(client, server_id, state, latest)
        return latest
    if (state.status, state.mark_status, state.mark_time) == ("RUNNING", "RUNNING", latest.time):
        return None
    ends = [c for c in known if c.status in journal.TERMINAL_STATUSES and c.time <= latest.time]
    end = max(ends, key=Change.rank) if ends else None
    _write_open(client, server_id, latest.time, None if end is None else
                {"time": end.time, "status": end.status, "metadata": end.metadata})
    return latest


def _write_open(client: PlutoClient, server_id: int, at: int, end: dict | None) -> None:
    """RUNNING, marked as opened at ``at`` with the ``end`` it reopened (or None)."""
    marker = {"time": at, "status": "RUNNING", "end": end}
    client.update_status(server_id, "RUNNING", metadata=json.dumps({MARKER: marker}), at_ms=at)


def _write_end(client: PlutoClient, server_id: int, state: ServerState, change: Change) -> None:
    current = SEVERITY.get(state.status or "", 0)
    if current > SEVERITY[change.status] and (state.mark_time is not None
                                              or state.status == "FAILED"):
        # an earlier end of ours, or the reaper's FAILED (no marker) while we were offline:
        # the server would ignore a lower severity, so reopen first
        client.update_status(server_id, "RUNNING", at_ms=change.time)
    body = {**(change.metadata or {}), MARKER: {"time": change.time, "status": change.status}}
    client.update_status(server_id, change.status, metadata=json.dumps(body),
                         at_ms=change.time)


def _own(meta: Any) -> dict | None:
    """An end's own metadata: the server's statusMetadata without the marker."""
    if not isinstance(meta, dict):
        return None
    rest = {k: v for k, v in meta.items() if k != MARKER}
    return rest or None
