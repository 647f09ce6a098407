"""Real SDK jobs (``pluto_offline``) in their own processes, delivered by a real daemon."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from pluto_offline import journal
from tests.fixtures.daemon import DaemonProcess, wait_for
from tests.fixtures.server import LocalServer, user_config

PREAMBLE = "import os, sys, time, pathlib\nimport pluto_offline as pluto\n"


def job(journal_dir: Path, code: str, **env: str) -> subprocess.Popen:
    """A Python process running ``code`` with the SDK; autostart is off (the test runs the
    daemon), and no server is configured in its environment."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("PLUTO_", "MLOP_"))}
    full.update({"PLUTO_DIR": str(journal_dir), "PLUTO_PROJECT": "proj",
                 "PLUTO_OFFLINE_AUTOSTART": "0", **env})
    return subprocess.Popen([sys.executable, "-c", PREAMBLE + textwrap.dedent(code)], env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def finished(proc: subprocess.Popen, timeout: float = 30) -> int:
    out, _ = proc.communicate(timeout=timeout)
    if proc.returncode not in (0, 1, -signal.SIGTERM, 128 + signal.SIGTERM):
        raise AssertionError(out.decode(errors="replace"))
    return proc.returncode


def server_run(server: LocalServer, journal_dir: Path, run_id: str) -> dict:
    with journal.Journal.open(journal_dir) as j:
        row = journal.find_run(j, project="proj", run_id=run_id)
        assert row is not None and row.server_id, f"{run_id} not created"
        return server.get_run(row.server_id)


def steps(server: LocalServer, run: dict, name: str) -> list[int]:
    return [p["step"] for p in server.metrics(run["id"], "proj", name)]


def drain(server: LocalServer, journal_dir: Path) -> DaemonProcess:
    d = DaemonProcess(server, journal_dir, "--exit-when-idle")
    assert d.wait(60) == 0, d.log()
    return d


def test_a_trainer_offline_then_delivered_when_the_server_is_up(tmp_path, pluto_server):
    pluto_server.stop()
    trainer = job(tmp_path / "j", """
        run = pluto.init(name="trainer", run_id="t-offline", config={"lr": 0.1}, tags=["a"])
        for i in range(500):
            run.log({"train/loss": 1 / (i + 1), "acc": i, "phase": "warmup"})
        run.update_config({"epochs": 5})
        run.add_tags("done")
        run.finish()
    """)
    assert finished(trainer) == 0
    pluto_server.start()
    drain(pluto_server, tmp_path / "j")
    run = server_run(pluto_server, tmp_path / "j", "t-offline")
    assert run["status"] == "COMPLETED"
    assert user_config(run["config"]) == {"lr": 0.1, "epochs": 5}
    assert run["tags"] == ["a", "done"]
    assert steps(pluto_server, run, "train/loss") == list(range(1, 501))
    assert steps(pluto_server, run, "acc") == list(range(1, 501))
    assert pluto_server.request_counts()["/ingest/data"] >= 1  # the "phase" string series


def test_an_eval_job_closing_leaves_the_run_running_until_the_trainer_finishes(
        tmp_path, pluto_server):
    go = tmp_path / "finish-now"
    trainer = job(tmp_path / "j", f"""
        run = pluto.init(name="trainer", run_id="t-live")
        for i in range(50):
            run.log({{"train/loss": i}})
        run.flush()
        while not pathlib.Path({str(go)!r}).exists():
            time.sleep(0.05)
        run.finish()
    """)
    with DaemonProcess(pluto_server, tmp_path / "j") as d:
        wait_for(lambda: _created(tmp_path / "j", "t-live"), what="the trainer's run")
        evaluation = job(tmp_path / "j", """
            run = pluto.init(run_id="t-live", resume=True)
            run.log({"eval/acc": 0.9}, step=50)
            run.close()
        """)
        assert finished(evaluation) == 0
        wait_for(lambda: steps(pluto_server, server_run(pluto_server, tmp_path / "j", "t-live"),
                               "eval/acc") == [50], what="the eval metric")
        time.sleep(0.5)
        assert server_run(pluto_server, tmp_path / "j", "t-live")["status"] == "RUNNING"
        go.touch()
        assert finished(trainer) == 0
        wait_for(lambda: server_run(pluto_server, tmp_path / "j", "t-live")["status"]
                 == "COMPLETED", what="COMPLETED")
        assert d.terminate() == 0


def _created(journal_dir: Path, run_id: str) -> bool:
    with journal.Journal.open(journal_dir) as j:
        row = journal.find_run(j, project="proj", run_id=run_id)
        return bool(row and row.server_id)


def test_exception_sigterm_and_sigkill_end_runs_as_failed_terminated_and_running(
        tmp_path, pluto_server):
    crash = job(tmp_path / "j", """
        run = pluto.init(name="crash", run_id="t-crash")
        run.log({"x": 1})
        raise RuntimeError("diverged")
    """)
    sleeper = """
        run = pluto.init(name="{0}", run_id="t-{0}")
        for i in range(100):
            run.log({{"x": i}})
        run.flush()
        print("ready", flush=True)
        time.sleep(60)
    """
    term = job(tmp_path / "j", sleeper.format("term"))
    kill = job(tmp_path / "j", sleeper.format("kill"))
    for proc in (term, kill):
        assert proc.stdout.readline().strip() == b"ready"
    term.send_signal(signal.SIGTERM)
    kill.kill()
    finished(crash)
    finished(term)
    kill.wait(10)
    drain(pluto_server, tmp_path / "j")

    crashed = server_run(pluto_server, tmp_path / "j", "t-crash")
    assert crashed["status"] == "FAILED"
    assert "diverged" in str(crashed["statusMetadata"])
    assert server_run(pluto_server, tmp_path / "j", "t-term")["status"] == "TERMINATED"
    killed = server_run(pluto_server, tmp_path / "j", "t-kill")
    # nothing journaled an end: once plutosync finds the writer dead, it reports it
    assert killed["status"] == "FAILED"
    assert killed["statusMetadata"]["reason"] == "killed"
    assert steps(pluto_server, killed, "x") == list(range(1, 101))


def test_a_fork_of_an_unsynced_parent_and_a_resume_by_display_id(tmp_path, pluto_server):
    pluto_server.stop()
    parent = job(tmp_path / "j", """
        run = pluto.init(name="parent", run_id="t-parent", config={"lr": 0.1, "depth": 2})
        for i in range(100):
            run.log({"loss": i})
        run.finish()
    """)
    assert finished(parent) == 0
    child = job(tmp_path / "j", """
        run = pluto.init(name="child", run_id="t-child", fork_run_id="t-parent", fork_step=60,
                         config={"lr": 0.01})
        for i in range(61, 70):
            run.log({"loss": i}, step=i)
        run.finish()
    """)
    assert finished(child) == 0
    pluto_server.start()
    drain(pluto_server, tmp_path / "j")
    p = server_run(pluto_server, tmp_path / "j", "t-parent")
    c = server_run(pluto_server, tmp_path / "j", "t-child")
    assert (c["forkedFromRunId"], c["forkStep"]) == (p["id"], 60)
    assert user_config(c["config"]) == {"lr": 0.01, "depth": 2}
    assert c["status"] == "COMPLETED"

    # Another machine (another journal) resumes the parent by its display id.
    other = tmp_path / "other"
    evaluation = job(other, f"""
        run = pluto.init(run_id={p["displayId"]!r})
        run.log({{"eval/score": 7}}, step=100)
        run.close()
    """)
    assert finished(evaluation) == 0
    drain(pluto_server, other)
    assert steps(pluto_server, pluto_server.get_run(p["id"]), "eval/score") == [100]


def test_heartbeats_keep_a_live_run_from_the_reaper(tmp_path):
    server = LocalServer(tmp_path / "srv", reaper=(1.0, 1.0)).start()
    gate = tmp_path / "done"
    try:
        # trains until the test has reaped: on a busy machine a fixed-length loop could end
        # before the reap, and the run would read COMPLETED for the wrong reason
        trainer = job(tmp_path / "j", """
            import os, pathlib
            run = pluto.init(name="slow", run_id="t-slow")
            i = 0
            while not pathlib.Path(os.environ["GATE"]).exists():
                run.log({"x": i})
                i += 1
                time.sleep(0.1)
            run.finish()
        """, GATE=str(gate))
        with DaemonProcess(server, tmp_path / "j", "--heartbeat", "0.3") as d:
            wait_for(lambda: _created(tmp_path / "j", "t-slow"), what="the run")
            time.sleep(1.5)  # past the reaper's 1 s without a heartbeat
            server.reap()
            assert server_run(server, tmp_path / "j", "t-slow")["status"] == "RUNNING"
            gate.touch()
            assert finished(trainer) == 0
            wait_for(lambda: server_run(server, tmp_path / "j", "t-slow")["status"]
                     == "COMPLETED", what="COMPLETED")
            assert d.terminate() == 0
    finally:
        server.stop()
