"""One run written from several journals, delivered in any order (issue 8; docs/delivery.md).

Real SDK jobs in their own processes, each with its own journal directory (as on separate
nodes), real signals, and real ``plutosync push`` / ``run`` processes against the local server.
"""

from __future__ import annotations

import json
import signal

import pytest

from pluto_offline import journal
from syncd import runstate
from tests.daemon.test_sdk_jobs import drain, finished, job, steps
from tests.fixtures.daemon import DaemonProcess, JournalBuilder
from tests.fixtures.server import user_config

SLURM = """
    import signal
    k = int(os.environ["ALLOC"])
    run = pluto.init(name=f"alloc-{k}", run_id="slurm-run", resume=True)
    for i in range(10):
        run.log({"train/loss": float(10 * k + i)}, step=10 * k + i)
    if k < 3:
        os.kill(os.getpid(), signal.SIGTERM)   # the allocation's time is up
        time.sleep(5)
    run.finish()
"""


def push(server, where, *paths, timeout: float = 60) -> DaemonProcess:
    p = DaemonProcess(server, where, *map(str, paths), "--timeout", "20", command="push",
                      env={"COLUMNS": "200"})
    p.wait(timeout)
    return p


def slurm_journals(tmp_path) -> list:
    dirs = [tmp_path / f"alloc{k}" for k in range(4)]
    for k, d in enumerate(dirs):  # one after another in time, as Slurm runs them
        rc = finished(job(d, SLURM, ALLOC=str(k)))
        assert rc in (-signal.SIGTERM, 128 + signal.SIGTERM) if k < 3 else rc == 0
    return dirs


def the_run(server, project: str = "proj") -> dict:
    runs = server.list_runs(project)
    assert len(runs) == 1, [(r["name"], r["status"]) for r in runs]
    return server.get_run(runs[0]["id"])


@pytest.mark.parametrize("order", ["together", "reverse", "3-0-2-1"])
def test_slurm_allocations_end_completed_in_any_delivery_order(tmp_path, pluto_server, order):
    dirs = slurm_journals(tmp_path)
    if order == "together":
        p = push(pluto_server, tmp_path / "p", *dirs)
        assert p.proc.returncode == 0, p.log()
    else:
        seq = list(reversed(dirs)) if order == "reverse" else [dirs[int(c)] for c in order.split("-")]
        for d in seq:
            p = push(pluto_server, tmp_path / f"p-{d.name}", d)
            assert p.proc.returncode == 0, p.log()
    run = the_run(pluto_server)
    assert run["status"] == "COMPLETED", run["statusMetadata"]
    # every allocation attaches (resume=True): the first create to reach the server names it
    assert run["name"] == ("alloc-0" if order == "together" else "alloc-3") or order == "together"
    assert steps(pluto_server, run, "train/loss") == list(range(40))


def test_a_fresh_journal_resuming_with_implicit_steps_warns(tmp_path):
    p = job(tmp_path / "j", """
        run = pluto.init(run_id="elsewhere", resume=True)
        run.log({"x": 1.0})
        run.finish()
    """)
    out = p.communicate(timeout=30)[0].decode()
    assert p.returncode == 0, out
    assert "step=" in out and "this journal has no record of it" in out


TRAIN = """
    run = pluto.init(name="training", run_id="train-1", config={"lr": 0.1})
    for i in range(300):
        run.log({"train/loss": 1.0 / (i + 1)}, step=i)
        if i == 150:
            pathlib.Path(os.environ["GATE"]).write_text("half")
            while not pathlib.Path(os.environ["GATE"] + ".eval").exists():
                time.sleep(0.02)
    run.finish()
"""
EVAL = """
    run = pluto.init(name="eval", run_id="train-1", resume=True)
    run.log({"eval/acc": 0.5}, step=0)
    run.log({"eval/acc": 0.7}, step=1)
    run.close()
    pathlib.Path(os.environ["GATE"] + ".eval").write_text("done")
"""


def eval_journals(tmp_path):
    gate = tmp_path / "gate"
    a, b = tmp_path / "nodeA", tmp_path / "nodeB"
    trainer = job(a, TRAIN, GATE=str(gate))
    import time

    deadline = time.monotonic() + 30
    while not gate.exists():
        assert time.monotonic() < deadline and trainer.poll() is None
        time.sleep(0.02)
    assert finished(job(b, EVAL, GATE=str(gate))) == 0
    assert finished(trainer) == 0
    return a, b


def assert_training_completed(server) -> None:
    run = the_run(server)
    assert (run["status"], run["name"]) == ("COMPLETED", "training")
    assert len(steps(server, run, "train/loss")) == 300
    assert steps(server, run, "eval/acc") == [0, 1]


@pytest.mark.parametrize("first", ["training", "eval"])
def test_an_eval_job_from_another_node_in_either_order(tmp_path, pluto_server, first):
    a, b = eval_journals(tmp_path)
    order = [a, b]
    if first == "eval":
        # alone, the eval journal waits for the run's own journal, and says so; it is
        # pushed again once that one is in
        alone = push(pluto_server, tmp_path / "p0", b)
        assert alone.proc.returncode == 1
        assert "created on the server by the journal that started it" in alone.log()
        assert pluto_server.list_runs("proj") == []
    for i, d in enumerate(order):
        p = push(pluto_server, tmp_path / f"p{i + 1}", d)
        assert p.proc.returncode == 0, p.log()
    assert_training_completed(pluto_server)
    for d in (a, b):
        with journal.Journal.open(d) as j:
            assert [r.conflict for r in journal.all_runs(j)] == [None]


LIVE_EVAL = """
    run = pluto.init(name="eval", run_id="train-1", resume=True)
    run.log({"eval/acc": 0.5}, step=0)
    run.log({"eval/acc": 0.7}, step=1)
    while not pathlib.Path(os.environ["SEEN"]).exists():  # the daemon has seen it running
        time.sleep(0.02)
    run.close()
    pathlib.Path(os.environ["GATE"] + ".eval").write_text("done")
"""


def test_a_running_eval_job_with_a_live_daemon_leaves_the_run_to_its_own_journal(
        tmp_path, pluto_server):
    """Seed 1091: the eval node's daemon saw the eval job while it ran (not yet known to only
    attach) before the training node's journal was delivered, and created the run under the
    eval job's name. A job that asked resume=True and still runs now only resumes."""
    from tests.fixtures.daemon import wait_for

    a, b, gate, seen = (tmp_path / n for n in ("nodeA", "nodeB", "gate", "seen"))
    trainer = job(a, TRAIN, GATE=str(gate))
    wait_for(lambda: gate.exists(), timeout=30, what="the training half way")
    with DaemonProcess(pluto_server, b) as daemon:
        evaluator = job(b, LIVE_EVAL, GATE=str(gate), SEEN=str(seen))
        wait_for(lambda: "is not on the server yet" in daemon.log(), timeout=30,
                 what="the eval node's daemon waiting for the run")
        assert pluto_server.list_runs("proj") == []  # it did not create it
        seen.write_text("go")
        assert finished(evaluator) == 0
        assert finished(trainer) == 0
        p = push(pluto_server, tmp_path / "p", a)
        assert p.proc.returncode == 0, p.log()
        wait_for(lambda: steps(pluto_server, the_run(pluto_server), "eval/acc") == [0, 1],
                 timeout=60, what="the eval points")
    assert_training_completed(pluto_server)
    for d in (a, b):
        with journal.Journal.open(d) as j:
            assert [r.conflict for r in journal.all_runs(j)] == [None]


def test_an_eval_journal_pushed_together_with_the_training_one(tmp_path, pluto_server):
    a, b = eval_journals(tmp_path)
    p = push(pluto_server, tmp_path / "p", b, a)
    assert p.proc.returncode == 0, p.log()
    assert_training_completed(pluto_server)


def _killed_job(where, run_id: str) -> None:
    """A job that logs 20 points of ``x``, flushes them and is SIGKILLed."""
    killed = job(where, f"""
        run = pluto.init(name="spot", run_id={run_id!r})
        for i in range(20):
            run.log({{"x": float(i)}}, step=i)
        run.flush()
        os.kill(os.getpid(), 9)
    """)
    assert killed.wait(30) == -9


def test_a_sigkilled_writer_is_reported_failed_and_a_later_resume_still_wins(
        tmp_path, pluto_server):
    _killed_job(tmp_path / "n1", "spot-1")
    p = push(pluto_server, tmp_path / "p1", tmp_path / "n1")
    assert p.proc.returncode == 0, p.log()
    run = the_run(pluto_server)
    assert run["status"] == "FAILED" and run["statusMetadata"]["reason"] == "killed"
    with journal.Journal.open(tmp_path / "n1") as j:
        rows = runstate.journal_status(j)
        assert [(r.state, r.synced) for r in rows] == [("killed", True)]


def test_a_kill_reported_before_a_resume_in_the_same_journal_is_not_reported_again(
        tmp_path, pluto_server):
    """Chaos seed 1147: a trainer SIGKILLed, then a job resuming its run in the same journal
    that close()s: the kill was journaled (FAILED killed) before the resume, and again after
    it at the run's last event time, so the run ended FAILED instead of open."""
    _killed_job(tmp_path / "n1", "spot-3")
    assert finished(job(tmp_path / "n1", """
        run = pluto.init(name="spot", run_id="spot-3", resume=True)
        run.log({"x": 20.0}, step=20)
        run.close()
    """)) == 0
    p = push(pluto_server, tmp_path / "p1", tmp_path / "n1")
    assert p.proc.returncode == 0, p.log()
    run = the_run(pluto_server)
    assert run["status"] == "RUNNING"  # the resume reopened it; close() leaves it so
    assert steps(pluto_server, run, "x") == list(range(21))
    with journal.Journal.open(tmp_path / "n1") as j:
        kinds = [k for (k,) in j.conn.execute(
            "SELECT kind FROM events WHERE kind IN ('create', 'resume', 'status') ORDER BY seq")]
    assert kinds == ["create", "status", "resume"]


def test_killed_then_resumed_elsewhere_completes_whatever_the_order(tmp_path, pluto_server):
    jb1, jb2 = JournalBuilder(tmp_path / "n1"), JournalBuilder(tmp_path / "n2")
    t0 = journal.now_ms() - 60_000
    k1 = jb1.run("spot-2", created_at=t0)
    jb1.metrics(k1, range(10))
    jb1.status(k1, "FAILED", time=t0 + 1_000, metadata={"reason": "killed"})
    k2 = jb2.run("spot-2", created_at=t0 + 2_000, resume_ok=True)
    jb2.metrics(k2, range(10, 20))
    jb2.status(k2, "COMPLETED", time=t0 + 3_000)
    jb1.close()
    jb2.close()
    p = push(pluto_server, tmp_path / "p", tmp_path / "n2")
    assert p.proc.returncode == 0, p.log()
    p = push(pluto_server, tmp_path / "q", tmp_path / "n1")
    assert p.proc.returncode == 0, p.log()
    run = the_run(pluto_server)
    assert run["status"] == "COMPLETED"
    assert steps(pluto_server, run, "train/loss") == list(range(20))


def test_a_refused_config_is_recorded_and_everything_else_delivered(tmp_path, pluto_server):
    jb = JournalBuilder(tmp_path / "j")
    bad = jb.run("bad-config", config=None)
    with jb.j.transaction():  # as an older SDK journaled them: a string, and a bare NaN
        jb.j.conn.execute("UPDATE events SET payload = ? WHERE run = ? AND kind = 'create'",
                          (json.dumps({"name": "bad-config", "config": "lr=0.1", "tags": []}), bad))
    jb.event(bad, "config", '{"lr": NaN}', raw=True)
    jb.metrics(bad, range(5))
    jb.status(bad, "COMPLETED")
    good = jb.run("healthy")
    jb.metrics(good, range(5))
    jb.status(good, "COMPLETED")
    jb.close()
    p = push(pluto_server, tmp_path / "p", tmp_path / "j")
    assert p.proc.returncode == 1, p.log()
    assert "everything delivered" not in p.log()
    runs = {r["name"]: pluto_server.get_run(r["id"]) for r in pluto_server.list_runs("proj")}
    assert {n: r["status"] for n, r in runs.items()} == {"bad-config": "COMPLETED",
                                                         "healthy": "COMPLETED"}
    for run in runs.values():
        assert steps(pluto_server, run, "train/loss") == list(range(5))
    with journal.Journal.open(tmp_path / "j") as j:
        rows = {r.name: r for r in runstate.journal_status(j)}
    reasons = [x["reason"] for x in rows["bad-config"].rejections]
    assert len(reasons) == 2 and all("Invalid config JSON" in r for r in reasons), reasons
    assert rows["healthy"].synced and not rows["healthy"].rejections


def test_a_create_refused_for_its_tags_still_delivers_the_run(tmp_path, pluto_server):
    jb = JournalBuilder(tmp_path / "j")
    key = jb.run("too-many-tags", tags=[f"t{i}" for i in range(51)])
    jb.metrics(key, range(5))
    jb.status(key, "COMPLETED")
    jb.close()
    p = push(pluto_server, tmp_path / "p", tmp_path / "j")
    assert p.proc.returncode == 1, p.log()
    assert "everything delivered" not in p.log() and "tags" in p.log()
    run = the_run(pluto_server)
    assert run["status"] == "COMPLETED" and run["tags"] == []
    assert steps(pluto_server, run, "train/loss") == list(range(5))
    with journal.Journal.open(tmp_path / "j") as j:
        (rej,) = journal.rejected_events(j)
    assert rej["kind"] == "tags" and "at most 50 element" in rej["reason"]


def test_a_9_mb_config_run_ends_completed(tmp_path, pluto_server):
    big = {f"k{i}": "v" * 1000 for i in range(9 * 1024)}
    (tmp_path / "config.json").write_text(json.dumps(big))
    assert finished(job(tmp_path / "j", """
        import json
        config = json.loads(pathlib.Path(os.environ["CONFIG"]).read_text())
        run = pluto.init(name="big", run_id="big-1", config=config)
        for i in range(10):
            run.log({"x": float(i)}, step=i)
        run.finish()
    """, CONFIG=str(tmp_path / "config.json")), timeout=60) == 0
    d = drain(pluto_server, tmp_path / "j")
    run = the_run(pluto_server)
    assert run["status"] == "COMPLETED", d.log()
    assert len(user_config(run["config"])) == len(big)
    assert steps(pluto_server, run, "x") == list(range(10))
