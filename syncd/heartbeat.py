"""Heartbeats for runs whose writer process is alive (``POST {py}/api/runs/trigger``).

The server's reaper marks a RUNNING run FAILED after 150 s without one; SDK processes never
touch the network, so the daemon beats for them. It runs in its own thread with its own journal
connection and HTTP session, so a long NDJSON upload never delays a beat.

A run the reaper marked FAILED during an outage while its writer is still alive is set back to
RUNNING at the next beat, marked as opened at the journal's latest open (``finalstate``), unless
the journal itself ended the run, or the FAILED is an end plutosync delivered (another
journal's writer failed: under the rule of docs/delivery.md the latest status change stands).
A reopen that gets no answer may land after the run's end: its final state is noted to be sent
again, as for any state request (``Replayer.ambiguous``).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from pluto_offline import journal
from syncd import finalstate, runstate
from syncd.client import ClientError, PlutoClient, TransientError
from syncd.replayer import reassert_due
from syncd.settings import Settings

log = logging.getLogger("plutosync")

HEARTBEAT_S = 5.0
_ALL = 2**62


def live_runs(j: journal.Journal) -> set[int]:
    """Keys of runs with at least one writer process alive now."""
    try:
        live = journal.live_writer_ids(j)
    except ImportError:  # an SDK without spill files: no liveness information
        return set()
    if not live:
        return set()
    return {w["run"] for w in journal.writers(j) if w["id"] in live}


class Heartbeat(threading.Thread):
    def __init__(self, journal_file: Path, settings: Settings, stop: threading.Event,
                 interval: float = HEARTBEAT_S) -> None:
        super().__init__(name="plutosync-heartbeat", daemon=True)
        self.journal_file = journal_file
        self.settings = settings
        self.stop = stop
        self.interval = interval
        self._told: set[tuple[int, str]] = set()  # (run, what) already logged

    def run(self) -> None:
        j = journal.Journal.open(self.journal_file, create=False)
        client = PlutoClient(self.settings)
        try:
            while not self.stop.is_set():
                try:
                    self.beat(j, client)
                except journal.JournalError as exc:
                    log.warning("heartbeat: %s", exc)
                self.stop.wait(self.interval)
        finally:
            client.close()
            j.close()

    def beat(self, j: journal.Journal, client: PlutoClient) -> int:
        """One heartbeat per live, created run; returns how many were answered."""
        answered = 0
        for key in sorted(live_runs(j)):
            row = journal.get_run(j, key)
            if row is None or row.server_id is None or self.stop.is_set():
                continue
            try:
                answer = client.heartbeat(row.server_id)
            except ClientError:
                continue  # the replayer reports the server's trouble; a beat is only a ping
            answered += 1
            status = answer.get("status")
            if status == "CANCELLED" and (key, status) not in self._told:
                self._told.add((key, status))
                log.warning("run %s/%s was cancelled from the Pluto UI", row.project,
                            row.name or row.run_id)
            elif status == "FAILED" and self._reaped(j, key):
                self._reopen(j, client, row)
        return answered

    def _reopen(self, j: journal.Journal, client: PlutoClient, row: journal.RunRow) -> None:
        """Undo the reaper's FAILED of a run whose writer is alive (not an end of ours)."""
        label = f"{row.project}/{row.name or row.run_id}"
        opener = journal.last_event(j, row.key, journal.OPENERS, before=_ALL)
        change = opener and finalstate.change_of(j, row.key, opener)
        if change is None or row.server_id is None:
            return
        with finalstate.run_lock(row.project, row.run_id):
            try:
                state = finalstate.ServerState.read(client, row.server_id)
            except ClientError:
                return  # a read: nothing was written, nothing can land late
            if state.status != "FAILED":
                return
            if state.mark_status in journal.TERMINAL_STATUSES:  # an end plutosync delivered
                if (row.key, "ended") not in self._told:
                    self._told.add((row.key, "ended"))
                    log.info("run %s: FAILED by another writer's end at %s, while this "
                             "journal's job is alive: left as is (the latest status change "
                             "stands)", label, runstate.clock((state.mark_time or 0) / 1000))
                return
            try:
                finalstate.reopen(client, row.server_id, state, change.time)
            except TransientError as exc:
                if exc.unanswered:  # the RUNNING may still land after the run's end
                    journal.note_reassert(j, row.key, reassert_due(client.settings.timeout),
                                          {"status"})
                return
            except ClientError:
                return
        log.info("run %s: the server had marked it FAILED (no heartbeat while offline) but "
                 "its job is alive: set back to RUNNING", label)

    @staticmethod
    def _reaped(j: journal.Journal, key: int) -> bool:
        last = journal.last_event(j, key, journal.LIFECYCLE_KINDS, before=_ALL)
        return not (last and last.kind == "status"
                    and (last.data() or {}).get("status") in journal.TERMINAL_STATUSES)
