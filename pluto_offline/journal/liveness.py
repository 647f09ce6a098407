"""Whether a writer's process is alive, from the process itself: its pid and its start time.

A writer's spill file lock says it is alive as long as the file is there; a ``/tmp`` cleaner
(or a person) deleting spill files under a live job must not make it read as killed. So a
writer the journal records on this host (``writers.pid``, ``writers.host``) is also alive while
a process with its pid runs that **started before the writer opened** (``writers.opened_at``):
a pid reused by a later process started after that, so it does not count. The start time is
the kernel's (``/proc/PID/stat``, ticks since boot, placed on the wall clock with the boot time
of ``/proc/stat``); where there is no ``/proc`` (macOS) only the spill lock decides.

Limits (docs/sdk.md): a writer in another PID namespace than the reader (a sidecar without a
shared process namespace) is seen through its spill lock only; a wall clock stepped forward by
more than ``SLACK_S`` between a job's start and its ``init()`` hides its process from this check.

    alive = running_writers(j)   # ids of open writers whose process runs on this host
"""

from __future__ import annotations

import os
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pluto_offline.journal.store import Journal

SLACK_S = 2.0  # /proc/stat's boot time is whole seconds; the rest is rounding


def running_writers(j: Journal) -> set[str]:
    """Ids of writers not ended whose process runs on this host (see the module docstring)."""
    host = os.uname().nodename
    rows = j.conn.execute(
        "SELECT id, pid, opened_at FROM writers WHERE ended_at IS NULL AND host = ?", (host,))
    return {w for w, pid, opened_ms in rows if process_started_by(pid, opened_ms / 1000)}


def process_started_by(pid: int, when: float) -> bool:
    """Whether a live (not zombie) process ``pid`` runs that started by wall time ``when``."""
    started = process_start(pid)
    return started is not None and started <= when + SLACK_S


def process_start(pid: int) -> float | None:
    """The wall time (epoch seconds) process ``pid`` started, or None: no such process, a
    zombie, or no ``/proc`` to tell."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as fh:
            stat = fh.read().decode("ascii", "replace")
    except (OSError, ValueError):
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # the name may hold spaces and parentheses
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    boot = _boot_time()
    if boot is None:
        return None
    return boot + int(fields[19]) / _ticks()


def _boot_time() -> float | None:
    try:
        with open("/proc/stat", "rb") as fh:
            for line in fh:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


@cache
def _ticks() -> int:
    return os.sysconf("SC_CLK_TCK")
