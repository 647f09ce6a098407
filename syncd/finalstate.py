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
        fields = client.run_fields(server_id, ("status", "statusMetadata"))
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
    marker = {"time": at, "status": "RUNNING", "end": state.last_end}
    client.update_status(server_id, "RUNNING", metadata=json.dumps({MARKER: marker}), at_ms=at)
    return "running"



def mark_open(client: PlutoClient, server_id: int, at: int) -> None:
    """Mark a run this journal has just created as RUNNING since ``at`` (epoch ms)."""
    marker = {"time": at, "status": "RUNNING", "end": None}
    client.update_status(server_id, "RUNNING", metadata=json.dumps({MARKER: marker}), at_ms=at)


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
    current = SEVERITY.get(state.status or "", 0)
    if current > SEVERITY[status] and (state.mark_time is not None or state.status == "FAILED"):
        # an earlier end of ours, or the reaper's FAILED (no marker) while we were offline:
        # the server would ignore a lower severity, so reopen first
        client.update_status(server_id, "RUNNING", at_ms=at)
    body = {**(metadata or {}), MARKER: {"time": at, "status": status}}
    client.update_status(server_id, status, metadata=json.dumps(body), at_ms=at)
    return "sent"
