"""Processes forked after ``init()`` (issue 11, item 1): real ``os.fork``, ``multiprocessing``
with the fork start method, ``Pool`` workers; delivered to the local server by a real replayer.

A child logs as a writer of its own for the same run; it never ends, finishes or deletes the
parent's run or spill, whether it leaves by ``sys.exit``, ``os._exit``, ``finish()``, an
exception or a Pool's ``terminate()``; the parent's data stays exact.
"""

from __future__ import annotations

from pathlib import Path

from pluto_offline import journal
from syncd.replayer import drain
from tests.fixtures.daemon import replayer_for

from .conftest import events, metric_lines, run_child, statuses

FORKS = """
import os, sys, multiprocessing as mp
import pluto_offline as pluto
from pluto_offline import journal

run = pluto.init(dir=sys.argv[1], project="proj", run_id="forked")
for i in range(20):
    run.log({"parent": float(i)})

def child(name, how):
    pid = os.fork()
    if pid:
        return pid
    for s in range(1, 51):
        pluto.log({name: float(s)}, step=s)
    if how == "finish":
        run.finish()
    if how == "raise":
        raise RuntimeError("the child failed")
    if how == "_exit":
        os._exit(0)
    sys.exit(0)

def quiet():  # a child that never logs: opens nothing, writes nothing
    if os.fork() == 0:
        os._exit(0)

def task(i):
    pluto.log({"pool": float(i)}, step=i + 1)
    return i

pids = [child(*c) for c in (("exits", "exit"), ("os_exits", "_exit"), ("finishes", "finish"),
                            ("raises", "raise"))]
quiet()
codes = [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids]
ctx = mp.get_context("fork")
with ctx.Pool(2) as pool:  # leaving the block terminates the workers (SIGTERM)
    pool.map(task, range(30))
pool = ctx.Pool(2)
pool.map(task, range(30, 60))
pool.close(); pool.join()  # the workers leave through os._exit, after their finalizers
worker = ctx.Process(target=lambda: [pluto.log({"process": float(s)}, step=s) for s in (1, 2)])
worker.start(); worker.join()

# the parent's run goes on as if nothing happened
assert run._spill.path.exists(), "the parent's spill file was deleted"
with journal.Journal.open(sys.argv[1]) as j:
    assert not [e for e in j.conn.execute("SELECT 1 FROM events WHERE kind = 'status'")]
for i in range(20):
    run.log({"parent": float(20 + i)})
print("codes", codes, flush=True)
"""


def test_forked_children_log_as_writers_of_their_own_and_never_end_the_parents_run(
        tmp_path: Path, pluto_server_module):
    jdir = tmp_path / "j"
    r = run_child(FORKS, str(jdir))
    assert r.returncode == 0, r.stderr
    assert "codes [0, 0, 0, 1]" in r.stdout  # the raising child failed as a process should
    assert r.stderr.count("only this process's writer of run forked is closed") == 1
    assert "RuntimeError: the child failed" in r.stderr

    with journal.Journal.open(jdir) as j:
        journal.recover(j)  # the os._exit'd child's tail, as plutosync finds it
        assert drain(replayer_for(jdir, pluto_server_module), deadline=None)
        row = journal.find_run(j, project="proj", run_id="forked")
        writers = {w["pid"]: w["ended_how"] for w in journal.writers(j)}
    server = pluto_server_module
    run = server.get_run(row.server_id)
    assert run["status"] == "COMPLETED"
    def points(name: str) -> list[tuple[int, float]]:
        return [(p["step"], p["value"]) for p in server.metrics(run["id"], "proj", name)]

    assert points("parent") == [(s, float(s - 1)) for s in range(1, 41)]
    for name in ("exits", "os_exits", "finishes", "raises"):
        assert points(name) == [(s, float(s)) for s in range(1, 51)], name
    assert points("pool") == [(s, float(s - 1)) for s in range(1, 61)]
    assert points("process") == [(1, 1.0), (2, 2.0)]
    assert statuses(jdir) == [{"status": "COMPLETED", "metadata": None}]  # the parent's only
    # the parent, 4 os.fork children, 4 pool workers, 1 Process; the quiet child: no writer
    assert len(writers) == 10
    assert sorted(writers.values()) == ["COMPLETED"] + ["closed"] * 8 + ["killed"]


CANNOT_OPEN = """
import os, resource, sys
import pluto_offline as pluto
from pluto_offline import JournalError

run = pluto.init(dir=sys.argv[1], project="proj", run_id="r")
run.log({"x": 1.0})
pid = os.fork()
if pid == 0:
    # no descriptor left for a connection or a spill file of its own
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) - 1, hard))
    for s in range(10):
        run.log({"child": float(s)})
    try:
        run.update_config({"a": 1})
    except JournalError as exc:
        print("update_config:", exc, flush=True)
    os._exit(0)
os.waitpid(pid, 0)
run.log({"x": 2.0})
"""


def test_a_child_that_cannot_open_a_writer_warns_once_and_the_parent_is_exact(jdir):
    r = run_child(CANNOT_OPEN, str(jdir))
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("cannot open a writer of its own on the journal") == 1
    assert "its log() calls are dropped (the parent's are not affected)" in r.stderr
    assert "update_config: " in r.stdout
    assert [(line["step"], line["data"]) for line in metric_lines(jdir)] == [
        (1, {"x": 1.0}), (2, {"x": 2.0})]
    assert [e.kind for e in events(jdir) if e.kind == "config"] == []
    assert statuses(jdir) == [{"status": "COMPLETED", "metadata": None}]


BUSY_PARENT = """
import os, sys, threading
import pluto_offline as pluto

run = pluto.init(dir=sys.argv[1], project="proj", run_id="r", settings={"flush_interval": 0.001})
done = threading.Event()

def trainer():
    for i in range(8000):
        run.log({"loss": float(i), "phase": "train" if i % 2 else "eval"})
    done.set()

threading.Thread(target=trainer).start()
children = 0
while not done.is_set():  # fork while the trainer logs and the writer folds
    pid = os.fork()
    if pid == 0:
        run.log({"child": 1.0}, step=1)
        os._exit(0)
    os.waitpid(pid, 0)
    children += 1
print("children", children, flush=True)
"""


def test_forks_while_the_parent_logs_and_folds_leave_its_records_exact(jdir):
    r = run_child(BUSY_PARENT, str(jdir))
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.split()[-1]) >= 1
    lines = metric_lines(jdir)
    parent = [line for line in lines if "loss" in line["data"]]
    assert [line["step"] for line in parent] == list(range(1, 8001))
    assert [line["data"]["loss"] for line in parent] == [float(i) for i in range(8000)]
    assert len([line for line in lines if "child" in line["data"]]) == int(r.stdout.split()[-1])


CLOSES = """
import os, sys
import pluto_offline as pluto

run = pluto.init(dir=sys.argv[1], project="proj", run_id="eval", resume=True)
run.log({"acc": 0.5}, step=1)
pid = os.fork()
if pid == 0:  # a DataLoader-style worker: logs, then leaves by os._exit
    pluto.log({"worker": 1.0}, step=1)
    os._exit(0)
os.waitpid(pid, 0)
run.close()  # an eval job attached to a run another job ends
"""


def test_a_worker_leaving_by_os_exit_never_ends_a_closed_run(tmp_path: Path,
                                                              pluto_server_module):
    """The worker's writer is dead without an end, like a SIGKILLed job's: that must not make
    the run FAILED {reason: killed} (journal/forks.py), nor read as killed in status."""
    from syncd import runstate

    jdir = tmp_path / "j"
    r = run_child(CLOSES, str(jdir))
    assert r.returncode == 0, r.stderr
    assert statuses(jdir) == []  # recovery (in events()) journals no FAILED killed
    with journal.Journal.open(jdir) as j:
        [row] = runstate.journal_status(j)
        assert row.state == "closed"
        [run] = journal.all_runs(j)
        assert journal.only_attached(j, run.key)  # still an eval job that only attached
        writers = sorted(w["ended_how"] for w in journal.writers(j))
    assert writers == ["closed", "killed"]


FILES_THEN_FORK = """
import os, sys
import pluto_offline as pluto

run = pluto.init(dir=sys.argv[1], project="proj", run_id="media-fork",
                 settings={"flush_interval": 3600})  # no fold before the fork
run.log({"doc": [pluto.Text(f"sample {k}") for k in range(3)]}, step=1)
pid = os.fork()
if pid == 0:
    for s in range(5):
        pluto.log({"child": float(s)}, step=s)
    run.flush()  # the child's fold: only the child's records
    sys.exit(0)
os.waitpid(pid, 0)
run.finish()
"""


def test_files_logged_before_a_fork_are_journaled_once_by_the_parent(tmp_path: Path,
                                                                     pluto_server_module):
    jdir = tmp_path / "j"
    r = run_child(FILES_THEN_FORK, str(jdir))
    assert r.returncode == 0, r.stderr
    assert "is lost" not in r.stderr, r.stderr
    with journal.Journal.open(jdir) as j:
        journal.recover(j)
        rows = j.conn.execute("SELECT caption, file_name, lost FROM files").fetchall()
        assert len(rows) == 3 and not any(lost for _, _, lost in rows), rows
        assert drain(replayer_for(jdir, pluto_server_module), deadline=None)
        row = journal.find_run(j, project="proj", run_id="media-fork")
    server = pluto_server_module
    files = server.request("GET", "/api/runs/files",
                           params={"runId": row.server_id, "projectName": "proj"}).json()["files"]
    assert sorted(f["sampleIndex"] for f in files) == [0, 1, 2]
    assert [p["step"] for p in server.metrics(row.server_id, "proj", "child")] == [0, 1, 2, 3, 4]


TRANSACTION_AT_FORK = """
import os, sys, threading, time
import pluto_offline as pluto
from pluto_offline import journal

run = pluto.init(dir=sys.argv[1], project="proj", run_id="txn-fork")
run.log({"x": 1.0}, step=1)
opened, release = threading.Event(), threading.Event()

def stager():  # another thread of the job inside a transaction, as the file stager is
    with journal.Journal.open(sys.argv[1]) as j, j.transaction():
        opened.set()
        release.wait(10)

t = threading.Thread(target=stager); t.start()
opened.wait(10)
threading.Timer(0.5, release.set).start()
t0 = time.monotonic()
pid = os.fork()
if pid == 0:
    for s in range(5):
        pluto.log({"child": float(s)}, step=s)
    run.flush()
    os._exit(0)
waited = time.monotonic() - t0
_, status = os.waitpid(pid, 0)
t.join()
print(f"fork waited {waited:.1f} s; child took {time.monotonic() - t0 - waited:.1f} s", flush=True)
run.finish()
"""


def test_a_fork_waits_for_a_transaction_of_another_thread_so_the_child_can_write(jdir):
    """A child forked while another thread of the job was inside a transaction inherited
    SQLite's lock bookkeeping of it and found the journal locked for its whole busy timeout
    (60 s), then dropped its records. The fork now waits for the transaction to end."""
    r = run_child(TRANSACTION_AT_FORK, str(jdir), timeout=120)
    assert r.returncode == 0, r.stderr
    assert "cannot open a writer" not in r.stderr, r.stderr
    child = [x for x in metric_lines(jdir) if "child" in x["data"]]
    assert [x["step"] for x in child] == [0, 1, 2, 3, 4]


HISTOGRAM_THEN_FORK = """
import os, sys
import pluto_offline as pluto

run = pluto.init(dir=sys.argv[1], project="proj", run_id="hist-fork")
run.log({"h": pluto.Histogram([1, 2, 2, 3], bins=3), "note": "text"}, step=0)
pid = os.fork()
if pid == 0:
    pluto.log({"child": 1.0}, step=0)
    run.flush()
    os._exit(0)
os.waitpid(pid, 0)
run.finish()
"""


def test_a_forked_child_registers_the_parents_names_under_their_own_types(jdir):
    """The child registers the parent's names again (they may not be folded yet): a histogram
    went as DATA, and the server keeps a name's first type (chaos seed 1060)."""
    r = run_child(HISTOGRAM_THEN_FORK, str(jdir))
    assert r.returncode == 0, r.stderr
    types: dict[str, set[str]] = {}
    for e in events(jdir, "lognames"):
        for name in e.data()["names"]:
            types.setdefault(name, set()).add(e.data()["type"])
    assert types == {"h": {"HISTOGRAM"}, "note": {"DATA"}, "child": {"METRIC"}}
