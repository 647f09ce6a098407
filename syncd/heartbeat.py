"""Heartbeats for runs whose writer process is alive (``POST {py}/api/runs/trigger``).

The server's reaper marks a RUNNING run FAILED after 150 s without one; SDK processes never
touch the network, so the daemon beats for them. It runs in its own thread with its own journal
connection and HTTP session, so a long NDJSON upload never delays a beat.

A run the reaper marked FAILED during an outage while its writer is still alive is set back to
RUNNING at the next beat (unless the journal itself says FAILED).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from pluto_offline import journal
from syncd.client import ClientError, PlutoClient
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
                try:
                    client.update_status(row.server_id, "RUNNING")
                except ClientError:
                    continue
                log.info("run %s/%s: the server had marked it FAILED (no heartbeat while "
                         "offline) but its job is alive: set back to RUNNING",
                         row.project, row.name or row.run_id)
        return answered

    @staticmethod
    def _reaped(j: journal.Journal, key: int) -> bool:
        last = journal.last_event(j, key, ("create", "resume", "status"), before=_ALL)
        return not (last and last.kind == "status"
                    and (last.data() or {}).get("status") in journal.TERMINAL_STATUSES)
