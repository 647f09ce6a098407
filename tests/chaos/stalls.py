"""Helpers for tests in which the server holds a request past the daemon's timeout, then
applies it (the ``stall`` fault): a daemon with a short timeout, waits, a drain to "synced"."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from tests.chaos.oracle import journal_backlog
from tests.chaos.procs import DaemonProc
from tests.fixtures.server import LocalServer

TIMEOUT = 1.0  # the daemon's HTTP timeout here (PLUTOSYNC_TIMEOUT)
# A held create lands then: after the drain (the retry waits up to 1 s after the 1 s timeout,
# full jitter), and before the re-assert (due 3 timeouts after the timeout, at 4 s).
LATE = TIMEOUT + 2.0


def start_daemon(server: LocalServer, jdir: Path, timeout: float = TIMEOUT) -> DaemonProc:
    """A started ``plutosync run`` on ``jdir`` with a short HTTP ``timeout`` (seconds)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLUTO_")}
    env.update(server.env(), PLUTOSYNC_TIMEOUT=str(timeout))
    proc = DaemonProc(jdir, env, jdir / "daemon.log")
    proc.start()
    return proc


def wait(done: Callable[[], bool], seconds: float, step: float) -> None:
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        time.sleep(step)


def settled(jdir: Path) -> bool:
    """Nothing pending and no re-assert left: what a user's ``plutosync status`` calls synced."""
    backlog = journal_backlog(jdir)
    return not backlog["pending"] and not backlog["reasserts"]


def drain(server: LocalServer, jdir: Path, project: str, timeout: float = TIMEOUT) -> dict:
    """Deliver the journal until it is settled (≤ 60 s); returns the project's run as the
    server holds it then. The stalls here end before the re-assert is due, so by then the
    late request has landed and been undone."""
    proc = start_daemon(server, jdir, timeout)
    try:
        wait(lambda: settled(jdir), 60, 0.1)
    finally:
        proc.stop()
    assert settled(jdir), journal_backlog(jdir)
    return server.list_runs(project)[0]
