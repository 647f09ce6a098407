"""A request the server applies after the daemon gave up on it must not win over its successors.

Found by the chaos suite's stall faults, made deterministic here: the server holds the first
``config/update`` past the daemon's HTTP timeout, then applies it. The daemon, having retried it
and gone on, has meanwhile delivered the next update of the same key; the stale one lands last
and the server's config is not the one last set. Real servers do this (a slow database, a proxy
holding the request), so "config merge is idempotent" is not enough: a timed-out update is not
known to be dead.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pluto_offline
from tests.chaos.oracle import journal_backlog
from tests.chaos.procs import DaemonProc
from tests.chaos.stalls import LATE, TIMEOUT, drain, settled, start_daemon, wait
from tests.fixtures.server import LocalServer, user_config


def test_stalled_update_does_not_overwrite_a_later_one(pluto_server: LocalServer,
                                                       tmp_path: Path) -> None:
    run = pluto_offline.init(dir=tmp_path, project="stall", name="s", run_id="stall-r0",
                             settings={"autostart": False})
    run.update_config({"lr": 1})
    run.update_config({"lr": 2})
    run.finish()
    pluto_server.fault("stall", path="/api/runs/config/update", count=1, seconds=TIMEOUT + 2)
    # ... and the daemon re-asserts the final config 3 timeouts after the unanswered one
    server_run = drain(pluto_server, tmp_path, "stall")
    assert pluto_server.faults()[0]["fired"] == 1
    assert user_config(server_run["config"]) == {"lr": 2}


def test_a_stalled_config_of_the_create_does_not_overwrite_a_later_one(
        pluto_server: LocalServer, tmp_path: Path) -> None:
    """Seed 1133: the config that follows a create (its init config) was held past the
    timeout and landed after the next update; only event updates were noted for a re-assert."""
    run = pluto_offline.init(dir=tmp_path, project="stall-i", name="s", run_id="stall-i0",
                             config={"model": {"depth": 4}}, settings={"autostart": False})
    run.update_config({"model": {"depth": 8}})
    run.finish()
    pluto_server.fault("stall", path="/api/runs/config/update", count=1, seconds=TIMEOUT + 2)
    server_run = drain(pluto_server, tmp_path, "stall-i")
    assert pluto_server.faults()[0]["fired"] == 1
    assert user_config(server_run["config"]) == {"model": {"depth": 8}}
    assert "a config request got no answer" in (tmp_path / "daemon.log").read_text()


def test_stalled_create_does_not_reopen_a_finished_run(pluto_server: LocalServer,
                                                       tmp_path: Path) -> None:
    # a create sets RUNNING (a repeat one reopens the run): applied late, after COMPLETED
    run = pluto_offline.init(dir=tmp_path, project="stall-c", run_id="stall-c0",
                             settings={"autostart": False})
    run.log({"x": 1.0})
    run.finish()
    pluto_server.fault("stall", path="/api/runs/create", count=1, seconds=TIMEOUT + 2)
    server_run = drain(pluto_server, tmp_path, "stall-c")
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
    server_run = drain(pluto_server, tmp_path, "stall-r")
    assert pluto_server.faults()[0]["fired"] == 1
    assert server_run["status"] == "FAILED"


def test_a_stalled_running_mark_does_not_reopen_the_run(pluto_server: LocalServer,
                                                        tmp_path: Path) -> None:
    """Seed 1158 (soak of 4df0581): the RUNNING mark that follows a create was held past the
    timeout; the same daemon went on, delivered COMPLETED, and the held mark landed after it.
    Only the create itself, not the status check after it, was noted when unanswered."""
    run = pluto_offline.init(dir=tmp_path, project="stall-k", run_id="stall-k0",
                             settings={"autostart": False})
    run.log({"x": 1.0})
    run.finish()
    pluto_server.fault("stall", path="/api/runs/status/update", count=1, seconds=LATE)
    daemon = start_daemon(pluto_server, tmp_path)
    try:
        wait(lambda: pluto_server.faults()[0]["fired"], 30, 0.02)
        held = time.monotonic()  # the mark is held, to be applied at LATE
        wait(lambda: settled(tmp_path), 30, 0.1)
    finally:
        daemon.stop()
    assert settled(tmp_path), journal_backlog(tmp_path)
    time.sleep(max(0.0, held + LATE + 0.5 - time.monotonic()))  # the held mark has landed
    assert pluto_server.list_runs("stall-k")[0]["status"] == "COMPLETED"
    assert "a status request got no answer" in (tmp_path / "daemon.log").read_text()


def test_a_running_mark_of_a_killed_daemon_does_not_reopen_the_run(
        pluto_server: LocalServer, tmp_path: Path) -> None:
    """Seed 1051: a daemon created the run, the server held its RUNNING mark, the daemon was
    SIGKILLed; the next daemon delivered COMPLETED, then the held mark landed (RUNNING)."""
    run = pluto_offline.init(dir=tmp_path, project="stall-m", run_id="stall-m0",
                             settings={"autostart": False})
    run.finish()
    pluto_server.fault("stall", path="/api/runs/status/update", count=1, seconds=LATE)
    first = start_daemon(pluto_server, tmp_path)
    wait(lambda: pluto_server.faults()[0]["fired"], 30, 0.02)
    held = time.monotonic()
    first.kill()  # its RUNNING mark is held by the server, to be applied at LATE
    drain(pluto_server, tmp_path, "stall-m")
    time.sleep(max(0.0, held + LATE + 0.5 - time.monotonic()))  # the held mark has landed
    assert pluto_server.list_runs("stall-m")[0]["status"] == "COMPLETED"
    assert "a create request got no answer" in (tmp_path / "daemon.log").read_text()


def test_a_create_of_a_killed_daemon_does_not_reopen_the_run(
        pluto_server: LocalServer, tmp_path: Path) -> None:
    """Seed 1112: the server held a daemon's create, the daemon was SIGKILLed before any
    answer was kept; the next daemon created the run and delivered its FAILED, then the held
    create landed and reopened it (RUNNING). Only an open whose server id was kept was noted."""
    run = pluto_offline.init(dir=tmp_path, project="stall-d", run_id="stall-d0",
                             settings={"autostart": False})
    run.log({"x": 1.0})
    run.finish(code=1)
    pluto_server.fault("stall", path="/api/runs/create", count=1, seconds=LATE)
    first = start_daemon(pluto_server, tmp_path)
    wait(lambda: pluto_server.faults()[0]["fired"], 30, 0.02)
    held = time.monotonic()
    first.kill()  # its create is held by the server, to be applied at LATE
    drain(pluto_server, tmp_path, "stall-d")
    time.sleep(max(0.0, held + LATE + 0.5 - time.monotonic()))  # the held create has landed
    runs = pluto_server.list_runs("stall-d")
    assert [r["status"] for r in runs] == ["FAILED"]
    assert "a create request got no answer" in (tmp_path / "daemon.log").read_text()


def test_a_resume_of_a_killed_daemon_does_not_reopen_the_run(
        pluto_server: LocalServer, tmp_path: Path) -> None:
    """The same for a resume: the run is on the server, the job resumed it and finished; the
    daemon that sent the resume was SIGKILLed while the server held it."""
    first_job = pluto_offline.init(dir=tmp_path, project="stall-e", run_id="stall-e0",
                                   settings={"autostart": False})
    first_job.close()
    drain(pluto_server, tmp_path, "stall-e")
    again = pluto_offline.init(dir=tmp_path, project="stall-e", run_id="stall-e0",
                               resume=True, settings={"autostart": False})
    again.log({"x": 1.0})
    again.finish()
    pluto_server.fault("stall", path="/api/runs/resume", count=1, seconds=LATE)
    first = start_daemon(pluto_server, tmp_path)
    wait(lambda: pluto_server.faults()[0]["fired"], 30, 0.02)
    held = time.monotonic()
    first.kill()
    drain(pluto_server, tmp_path, "stall-e")
    time.sleep(max(0.0, held + LATE + 0.5 - time.monotonic()))
    assert pluto_server.list_runs("stall-e")[0]["status"] == "COMPLETED"
    assert "a resume request got no answer" in (tmp_path / "daemon.log").read_text()


def _late_create(server: LocalServer, jdir: Path, project: str) -> tuple[DaemonProc, float]:
    """A finished run whose create the server holds past the timeout and applies after the
    run's COMPLETED (reopening it). Returns the daemon, once it has drained the journal, and
    when the create was held (monotonic)."""
    run = pluto_offline.init(dir=jdir, project=project, run_id=f"{project}-0",
                             settings={"autostart": False})
    run.finish()
    server.fault("stall", path="/api/runs/create", count=1, seconds=LATE)
    daemon = start_daemon(server, jdir)
    wait(lambda: server.faults()[0]["fired"], 30, 0.02)
    fired = time.monotonic()
    wait(lambda: not journal_backlog(jdir)["pending"], 30, 0.02)
    return daemon, fired


def test_a_daemon_stopped_before_the_reassert_is_due_leaves_it_to_the_next(
        pluto_server: LocalServer, tmp_path: Path) -> None:
    # the late create lands (3 s) before the re-assert is due (1 s timeout + 3 timeouts);
    # a SIGTERM in between re-sends the final state on the way out and keeps the note
    daemon, fired = _late_create(pluto_server, tmp_path, "stall-x")
    time.sleep(max(0.0, fired + LATE + 0.4 - time.monotonic()))  # the late one landed
    daemon.stop()
    assert pluto_server.list_runs("stall-x")[0]["status"] == "COMPLETED"
    assert "before exiting" in (tmp_path / "daemon.log").read_text()
    assert journal_backlog(tmp_path)["reasserts"], "the note must outlive the daemon"
    assert drain(pluto_server, tmp_path, "stall-x")["status"] == "COMPLETED"


def test_a_daemon_killed_before_the_reassert_is_due_leaves_it_in_the_journal(
        pluto_server: LocalServer, tmp_path: Path) -> None:
    daemon, fired = _late_create(pluto_server, tmp_path, "stall-k")
    daemon.kill()  # SIGKILL: no way out, the note is all that is left
    assert time.monotonic() < fired + LATE, "drained after the late create landed"
    wait(lambda: pluto_server.list_runs("stall-k")[0]["status"] == "RUNNING", 5, 0.05)
    assert pluto_server.list_runs("stall-k")[0]["status"] == "RUNNING"  # reopened by it
    assert "a create request got no answer" in (tmp_path / "daemon.log").read_text()
    status = subprocess.run([sys.executable, "-m", "syncd", "status", "--dir", str(tmp_path),
                             "--check"], capture_output=True, text=True, timeout=60)
    assert status.returncode == 1, status.stdout
    assert "final config/tags/status to be sent again" in status.stdout
    assert "0 synced" in status.stdout
    assert drain(pluto_server, tmp_path, "stall-k")["status"] == "COMPLETED"
