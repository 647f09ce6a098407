"""A request the server applies after the daemon gave up on it must not win over its successors.

Found by the chaos suite's stall faults, made deterministic here: the server holds the first
``config/update`` past the daemon's HTTP timeout, then applies it. The daemon, having retried it
and gone on, has meanwhile delivered the next update of the same key; the stale one lands last
and the server's config is not the one last set. Real servers do this (a slow database, a proxy
holding the request), so "config merge is idempotent" is not enough: a timed-out update is not
known to be dead.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pluto_offline
from tests.chaos.oracle import journal_backlog
from tests.chaos.runner import DaemonProc
from tests.fixtures.server import LocalServer

TIMEOUT = 1.0  # the daemon's HTTP timeout here (PLUTOSYNC_TIMEOUT)


def test_stalled_update_does_not_overwrite_a_later_one(pluto_server: LocalServer,
                                                       tmp_path: Path) -> None:
    run = pluto_offline.init(dir=tmp_path, project="stall", name="s", run_id="stall-r0",
                             settings={"autostart": False})
    run.update_config({"lr": 1})
    run.update_config({"lr": 2})
    run.finish()
    pluto_server.fault("stall", path="/api/runs/config/update", count=1, seconds=TIMEOUT + 2)
    # ... and the daemon re-asserts the final config 3 timeouts after the unanswered one
    server_run = _drain(pluto_server, tmp_path, "stall",
                        lambda: pluto_server.list_runs("stall")[0]["config"] == {"lr": 2})
    assert server_run["config"] == {"lr": 2}


def _daemon(server: LocalServer, jdir: Path) -> DaemonProc:
    """A started ``plutosync run`` on ``jdir`` with the short HTTP timeout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLUTO_")}
    env.update(server.env(), PLUTOSYNC_TIMEOUT=str(TIMEOUT))
    daemon = DaemonProc(jdir, env, jdir / "daemon.log")
    daemon.start()
    return daemon


def _wait(done: Callable[[], bool], seconds: float, step: float) -> None:
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        time.sleep(step)


def _drain(server: LocalServer, jdir: Path, project: str, done: Callable[[], bool]) -> dict:
    """Deliver the journal, let the stalled request land, wait (≤ 15 s) for ``done``; returns
    the project's run as the server holds it."""
    daemon = _daemon(server, jdir)
    try:
        _wait(lambda: not journal_backlog(jdir)["pending"], 30, 0.1)
        time.sleep(TIMEOUT + 2.5)  # the stalled request has been applied by now
        _wait(done, 15, 0.2)
    finally:
        daemon.stop()
    assert not journal_backlog(jdir)["pending"]
    return server.list_runs(project)[0]


def test_stalled_create_does_not_reopen_a_finished_run(pluto_server: LocalServer,
                                                       tmp_path: Path) -> None:
    # a create sets RUNNING (a repeat one reopens the run): applied late, after COMPLETED
    run = pluto_offline.init(dir=tmp_path, project="stall-c", run_id="stall-c0",
                             settings={"autostart": False})
    run.log({"x": 1.0})
    run.finish()
    pluto_server.fault("stall", path="/api/runs/create", count=1, seconds=TIMEOUT + 2)
    server_run = _drain(pluto_server, tmp_path, "stall-c",
                        lambda: pluto_server.list_runs("stall-c")[0]["status"] == "COMPLETED")
    assert pluto_server.faults()[0]["fired"] == 1
    assert server_run["status"] == "COMPLETED"
    assert len(pluto_server.list_runs("stall-c")) == 1


def test_stalled_resume_does_not_reopen_a_finished_run(pluto_server: LocalServer,
                                                       tmp_path: Path) -> None:
    run = pluto_offline.init(dir=tmp_path, project="stall-r", run_id="stall-r0",
                             settings={"autostart": False})
    run.close()
    again = pluto_offline.init(dir=tmp_path, project="stall-r", run_id="stall-r0",
                               resume=True, settings={"autostart": False})
    again.log({"x": 1.0})
    again.finish(code=1)
    pluto_server.fault("stall", path="/api/runs/resume", count=1, seconds=TIMEOUT + 2)
    server_run = _drain(pluto_server, tmp_path, "stall-r",
                        lambda: pluto_server.list_runs("stall-r")[0]["status"] == "FAILED")
    assert pluto_server.faults()[0]["fired"] == 1
    assert server_run["status"] == "FAILED"


def test_a_daemon_stopped_before_the_reassert_is_due_does_it_on_the_way_out(
        pluto_server: LocalServer, tmp_path: Path) -> None:
    # the late create lands (2 s) before the re-assert is due (1 s timeout + 3 timeouts);
    # a SIGTERM in between must not leave the run reopened
    run = pluto_offline.init(dir=tmp_path, project="stall-x", run_id="stall-x0",
                             settings={"autostart": False})
    run.finish()
    pluto_server.fault("stall", path="/api/runs/create", count=1, seconds=TIMEOUT + 1)
    daemon = _daemon(pluto_server, tmp_path)
    try:
        _wait(lambda: pluto_server.faults()[0]["fired"], 30, 0.02)
        fired = time.monotonic()
        _wait(lambda: not journal_backlog(tmp_path)["pending"], 30, 0.05)
        time.sleep(max(0.0, fired + TIMEOUT + 1.5 - time.monotonic()))  # the late one landed
    finally:
        daemon.stop()
    assert pluto_server.list_runs("stall-x")[0]["status"] == "COMPLETED"
    assert "before exiting" in (tmp_path / "daemon.log").read_text()
