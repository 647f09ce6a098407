"""The heartbeat undoes the reaper's FAILED of a run whose job is alive, and nothing else.

Real SDK jobs (alive until the test lets them finish), the local server's real reaper, and
the daemon's replayer and heartbeat in this process, beating one beat at a time.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from pluto_offline import journal
from syncd.client import PlutoClient
from syncd.heartbeat import Heartbeat
from syncd.replayer import drain
from syncd.settings import Settings
from tests.daemon.test_sdk_jobs import finished, job, server_run
from tests.fixtures.daemon import JournalBuilder, replayer_for, wait_for
from tests.fixtures.server import LocalServer

LIVE = """
    import pathlib
    run = pluto.init(name="live", run_id="shared", resume=bool(os.environ.get("RESUME")))
    i = 0
    while not pathlib.Path(os.environ["GATE"]).exists():
        run.log({"x": i}, step=i)
        i += 1
        time.sleep(0.05)
    run.finish()
"""


def _beat(jdir, server, timeout: float = 30.0) -> int:
    """One heartbeat of ``jdir``'s live runs, as the daemon's heartbeat thread sends it."""
    settings = Settings.from_env(server=server.url, env={"PLUTO_API_KEY": server.api_key},
                                 timeout=timeout)
    with journal.Journal.open(jdir) as j:
        return Heartbeat(j.path, settings, stop=threading.Event()).beat(j, PlutoClient(settings))


def _points(jdir) -> int:
    if not (jdir / "journal.db").exists():
        return 0
    with journal.Journal.open(jdir) as j:
        return j.conn.execute("SELECT count(*) FROM events WHERE kind = 'metrics'").fetchone()[0]


@pytest.fixture
def server(tmp_path) -> Iterator[LocalServer]:
    """The local server with a reaper that fails a run after 0.2 s without a heartbeat."""
    srv = LocalServer(tmp_path / "srv", reaper=(0.2, 0.2)).start()
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def _no_job_left() -> Iterator[None]:
    """A test that fails before it lets its job finish must not leave it running."""
    yield
    for proc in _JOBS:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    _JOBS.clear()


_JOBS: list[subprocess.Popen] = []


def _live_job(tmp_path, name: str = "j", **env: str):
    gate = tmp_path / f"{name}.done"
    proc = job(tmp_path / name, LIVE, GATE=str(gate), **env)
    _JOBS.append(proc)
    wait_for(lambda: _points(tmp_path / name), what="the job's first points")
    return proc, gate


def _finished(proc, gate, jdir, server: LocalServer) -> str:
    """Let the job finish(), deliver its journal; the run's status then."""
    gate.touch()
    assert finished(proc) == 0
    assert drain(replayer_for(jdir, server), deadline=time.monotonic() + 30)
    return server_run(server, jdir, "shared")["status"]


def _live_and_reaped(tmp_path, server: LocalServer):
    """A live job's run, delivered, then marked FAILED by the server's reaper (no beat
    meanwhile: the network was down, say); returns the job's process and its gate."""
    proc, gate = _live_job(tmp_path)
    assert drain(replayer_for(tmp_path / "j", server), deadline=time.monotonic() + 30)
    time.sleep(0.3)  # past the reaper's 0.2 s without a heartbeat
    server.reap()
    assert server_run(server, tmp_path / "j", "shared")["status"] == "FAILED"
    return proc, gate


def test_a_live_run_the_reaper_failed_is_set_back_to_running_and_ends_completed(
        tmp_path, server: LocalServer):
    proc, gate = _live_and_reaped(tmp_path, server)
    assert _beat(tmp_path / "j", server) == 1
    run = server_run(server, tmp_path / "j", "shared")
    assert run["status"] == "RUNNING"
    with journal.Journal.open(tmp_path / "j") as j:
        opened = journal.lifecycle_time(j, 1, 1)
    # marked as opened at the job's create, so a later end of any journal still wins
    assert run["statusMetadata"]["plutoOffline"] == {"time": opened, "status": "RUNNING",
                                                     "end": None}
    assert _finished(proc, gate, tmp_path / "j", server) == "COMPLETED"


def test_a_failed_end_of_another_journal_is_not_undone_by_a_live_jobs_beat(
        tmp_path, server: LocalServer, caplog):
    """Rank 1 (journal b) failed after rank 0 (journal a, alive) opened the run: the latest
    status change is that FAILED, until rank 0 ends (docs/delivery.md)."""
    proc, gate = _live_job(tmp_path, "a")
    assert drain(replayer_for(tmp_path / "a", server), deadline=time.monotonic() + 30)
    other = JournalBuilder(tmp_path / "b")
    key = other.run("shared", resume_ok=True, created_at=journal.now_ms())
    other.status(key, "FAILED", time=journal.now_ms(), metadata={"reason": "rank 1"})
    assert drain(replayer_for(other.path, server), deadline=time.monotonic() + 30)
    assert server_run(server, tmp_path / "a", "shared")["status"] == "FAILED"
    with caplog.at_level(logging.INFO, logger="plutosync"):
        assert _beat(tmp_path / "a", server) == 1
    run = server_run(server, tmp_path / "a", "shared")
    assert run["status"] == "FAILED"
    assert run["statusMetadata"]["reason"] == "rank 1"
    assert "FAILED by another writer's end" in caplog.text
    assert _finished(proc, gate, tmp_path / "a", server) == "COMPLETED"


def test_a_reopen_held_by_the_server_is_undone_after_the_runs_end(
        tmp_path, server: LocalServer):
    proc, gate = _live_and_reaped(tmp_path, server)
    server.stop()  # the same server, without its reaper from now on: only the requests
    quiet = LocalServer(tmp_path / "srv").start()  # below move the run's status
    try:
        # the beat's RUNNING is held past its 2 s timeout, then applied 5 s after it was sent:
        # after the job's end was delivered, before the re-assert (3 timeouts after the
        # timeout: 8 s after)
        quiet.fault("stall", path="/api/runs/status/update", count=1, seconds=5.0)
        _beat(tmp_path / "j", quiet, timeout=2.0)
        with journal.Journal.open(tmp_path / "j") as j:
            [noted] = journal.runs_to_reassert(j)
        assert noted.run_id == "shared" and noted.reassert[1] == {"status"}
        gate.touch()
        assert finished(proc) == 0
        rep = replayer_for(tmp_path / "j", quiet)
        while journal.runs_with_pending(rep.j):
            rep.run_pass()
        assert server_run(quiet, tmp_path / "j", "shared")["status"] == "COMPLETED"
        # the end: a reopen (the reaper's FAILED outranks COMPLETED), then COMPLETED; then
        # the held RUNNING lands
        wait_for(lambda: quiet.request_counts()["/api/runs/status/update"] == 3,
                 what="the held request")
        assert server_run(quiet, tmp_path / "j", "shared")["status"] == "RUNNING"  # landed
        assert drain(rep, deadline=time.monotonic() + 30)
        run = server_run(quiet, tmp_path / "j", "shared")
        assert run["status"] == "COMPLETED", run["statusMetadata"]
    finally:
        quiet.stop()


def test_an_unanswered_status_read_notes_nothing(tmp_path, server: LocalServer):
    proc, gate = _live_and_reaped(tmp_path, server)
    server.fault("stall", path="/api/runs/details", count=1, seconds=3.0)
    _beat(tmp_path / "j", server, timeout=1.0)  # the read times out: nothing was written
    with journal.Journal.open(tmp_path / "j") as j:
        assert journal.runs_to_reassert(j) == []
    assert server_run(server, tmp_path / "j", "shared")["status"] == "FAILED"
    assert _finished(proc, gate, tmp_path / "j", server) == "COMPLETED"


def test_a_note_the_heartbeat_pushed_later_survives_the_replayers_clear(tmp_path):
    """The replayer clears the re-assert note it read once done; a note the heartbeat
    pushed later meanwhile (its own unanswered reopen) stays for its own time."""
    jb = JournalBuilder(tmp_path / "j")
    key = jb.run("shared")
    assert journal.note_reassert(jb.j, key, 100.0, {"status"})  # a new note
    assert not journal.note_reassert(jb.j, key, 200.0, {"config"})  # merged, not new
    journal.clear_reassert(jb.j, key, 100.0)
    assert jb.delivery(key).reassert == (200.0, {"config", "status"})
    journal.clear_reassert(jb.j, key, 200.0)
    assert jb.delivery(key).reassert is None
