"""Spill files deleted under a live job (a ``/tmp`` cleaner; issue 11 item 7).

A writer's liveness comes from its process (pid and start time), not from its spill file: a
job whose spill file vanished reads ``running`` while it runs, the daemon passing meanwhile
marks nothing ``killed``, and the run ends ``finished`` with all its data on the server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from pluto_offline import journal
from pluto_offline.journal import liveness
from tests.badinput.helpers import clean_env, cli, status_rows

JOB = """
import sys, pluto_offline as pluto
run = pluto.init(project="proj", name="survivor", run_id="survivor")
for i in range(50):
    run.log({"train/loss": i / 10})
run.flush()
print("logged", flush=True)
sys.stdin.readline()          # the test deletes the spill files and lets a daemon pass
for i in range(50, 100):
    run.log({"train/loss": i / 10})
run.finish()
print("finished", flush=True)
"""


def _job(journal_dir: Path) -> subprocess.Popen:
    env = clean_env(PLUTO_DIR=str(journal_dir), PLUTO_OFFLINE_AUTOSTART="0")
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(JOB)], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def test_a_live_job_whose_spill_files_were_deleted_ends_finished(tmp_path, pluto_server):
    d = tmp_path / "j"
    proc = _job(d)
    try:
        assert proc.stdout.readline() == "logged\n", proc.stdout.read()
        spills = list((d / journal.SPILL_DIR).iterdir())
        assert spills, "the job has a spill file"
        for f in spills:  # what systemd-tmpfiles or tmpreaper does
            f.unlink()

        delivered = cli("run", "--dir", str(d), "--once", env=clean_env(**pluto_server.env()))
        assert delivered.returncode == 0, delivered.stderr  # it recovered, and delivered so far
        (row,) = status_rows(d)
        assert (row["state"], row["live_writers"]) == ("running", 1)

        proc.stdin.write("go\n")
        proc.stdin.flush()
        # the SDK's line saying where the run went (stderr, merged here) may come first
        lines = [proc.stdout.readline() for _ in range(2)]
        assert "finished\n" in lines, lines
        assert proc.wait(30) == 0
    finally:
        proc.kill()
        proc.wait()
    (row,) = status_rows(d)
    assert (row["state"], row["live_writers"]) == ("finished", 0)
    pushed = cli("push", str(d), env=clean_env(**pluto_server.env()))
    assert pushed.returncode == 0, pushed.stderr
    (run,) = pluto_server.list_runs("proj")
    assert run["status"] == "COMPLETED"
    points = pluto_server.metrics(run["id"], "proj", "train/loss")
    steps = [p["step"] for p in points]
    assert steps == list(range(steps[0], steps[0] + 100))  # all 100, before and after
    with journal.Journal.open(d, readonly=True) as j:
        statuses = [e.data()["status"] for e in journal.pending_events(j, 1, after=0)
                    if e.kind == "status"]
        assert statuses == ["COMPLETED"]  # no FAILED {reason: killed} journaled meanwhile


def test_a_dead_writer_without_its_spill_file_is_still_killed(tmp_path):
    """The process decides both ways: a writer whose process is gone reads killed."""
    d = tmp_path / "j"
    res = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import os, pluto_offline as pluto
        run = pluto.init(project="proj", name="gone", run_id="gone")
        run.log({"x": 1})
        run.flush()
        os._exit(0)   # no finish, no cleanup: the spill file stays, then is deleted
        """)], env=clean_env(PLUTO_DIR=str(d), PLUTO_OFFLINE_AUTOSTART="0"),
        capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    for f in (d / journal.SPILL_DIR).iterdir():
        f.unlink()
    with journal.Journal.open(d) as j:
        journal.recover(j)
    (row,) = status_rows(d)
    assert (row["state"], row["live_writers"]) == ("killed", 0)


def test_a_reused_pid_is_not_the_writer():
    """A process started after the writer opened is another one, whatever its pid."""
    me = os.getpid()
    started = liveness.process_start(me)
    assert started is not None
    assert liveness.process_started_by(me, started + 60)
    assert not liveness.process_started_by(me, started - 60)
    assert liveness.process_start(2 ** 22 + 12345) is None  # beyond any pid_max: no process
