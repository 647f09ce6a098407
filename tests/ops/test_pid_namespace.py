"""Writers in another PID namespace (a container's job, often PID 1; issue 11 item 7).

A pid means something only in its PID namespace: each writer records its kernel (boot id) and
PID namespace, and a reader judges it by pid and start time only in that namespace; otherwise
its spill lock decides, and with its spill file gone, its process as seen from an ancestor
namespace (the host), or, where the reader cannot see it, it is not declared dead
(journal/liveness.py, docs/cli.md "States"). Real processes in real namespaces
(``unshare --pid --fork``); skipped only where the machine refuses to make one.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pluto_offline import journal
from pluto_offline.journal import liveness
from tests.badinput.helpers import ROOT, clean_env, cli, status_rows


def _unshare_refused() -> str | None:
    try:
        res = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare cannot run here: {exc}"
    if res.returncode != 0:
        return f"unshare --pid --fork is refused here: {res.stderr.strip()}"
    return None


pytestmark = pytest.mark.skipif(bool(_unshare_refused()), reason=_unshare_refused() or "")

# as a container's entrypoint: PID 1 of its own PID namespace (this host's /proc stays mounted,
# so it can say which pid the host knows it by)
JOB = """
import os, sys, pluto_offline as pluto
run = pluto.init(project=sys.argv[1], name="boxed", run_id="boxed")
for i in range(50):
    run.log({"train/loss": i / 10})
run.flush()
print(os.getpid(), os.readlink("/proc/self"), flush=True)
sys.stdin.readline()          # the test looks at it (and may SIGKILL it) meanwhile
for i in range(50, 100):
    run.log({"train/loss": i / 10})
run.finish()
print("finished", flush=True)
"""


class Boxed:
    """A job run as PID 1 under ``unshare --pid --fork``, as in a container."""

    def __init__(self, journal_dir: Path, project: str):
        env = clean_env(PLUTO_DIR=str(journal_dir), PLUTO_OFFLINE_AUTOSTART="0")
        self.proc = subprocess.Popen(
            ["unshare", "--pid", "--fork", sys.executable, "-c", textwrap.dedent(JOB), project],
            env=env, cwd=ROOT, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(30)
            raise AssertionError(f"the boxed job did not start: {self.proc.stderr.read()}")
        inside, self.host_pid = (int(x) for x in line.split())
        assert inside == 1, "the job is PID 1 of its namespace"

    def kill(self) -> None:
        """SIGKILL, as the OOM killer or ``docker kill`` does (the namespace goes with it)."""
        os.kill(self.host_pid, signal.SIGKILL)
        self.proc.wait(30)
        deadline = time.monotonic() + 10
        while liveness.process_start(self.host_pid) is not None and time.monotonic() < deadline:
            time.sleep(0.05)

    def finish(self) -> None:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        out, err = self.proc.communicate(timeout=60)
        assert "finished" in out, err
        assert self.proc.returncode == 0, err

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.kill(self.host_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.kill()
            self.proc.wait(30)


def _delete_spills(d: Path) -> None:
    """What systemd-tmpfiles or tmpreaper does."""
    spills = list((d / journal.SPILL_DIR).iterdir())
    assert spills, "the job has a spill file"
    for f in spills:
        f.unlink()


def _statuses(d: Path) -> list[dict]:
    with journal.Journal.open(d, readonly=True) as j:
        return [e.data() for e in journal.pending_events(j, 1, after=0) if e.kind == "status"]


def _in_the_initial_pid_namespace() -> bool:
    return liveness._proc_ns() == liveness.INIT_PID_NS and not liveness._hidepid()


KILLED = {"status": "FAILED", "metadata": {"reason": "killed"}}


@pytest.mark.parametrize("spill", ["kept", "deleted"])
def test_a_killed_pid_1_job_of_a_container_reads_killed_from_the_host(tmp_path, pluto_server,
                                                                      spill):
    """The reproduction: the host's own PID 1 started long before the job, so judging the
    writer's pid 1 in the host's /proc called it alive, for ever."""
    if spill == "deleted" and not _in_the_initial_pid_namespace():
        pytest.skip("this test runs in a PID namespace that cannot see every process: a "
                    "writer whose spill file is gone is not declared dead from here")
    d = tmp_path / "j"
    job = Boxed(d, "boxed-kill")
    try:
        job.kill()
    finally:
        job.close()
    with journal.Journal.open(d, readonly=True) as j:
        (w,) = journal.writers(j)
        assert (w["pid"], w["ended_at"]) == (1, None)  # pid 1 on the host is another process
        assert liveness.process_started_by(1, w["opened_at"] / 1000)
    if spill == "deleted":
        _delete_spills(d)

    (row,) = status_rows(d)
    assert (row["state"], row["live_writers"]) == ("killed", 0)

    delivered = cli("run", "--dir", str(d), "--once", env=clean_env(**pluto_server.env()))
    assert delivered.returncode == 0, delivered.stderr
    assert _statuses(d) == [KILLED]  # recovery reported the kill, once
    (run,) = pluto_server.list_runs("boxed-kill")
    assert run["status"] == "FAILED"
    steps = [p["step"] for p in pluto_server.metrics(run["id"], "boxed-kill", "train/loss")]
    assert len(steps) == 50  # what it logged before the kill
    (row,) = status_rows(d)
    assert (row["state"], row["live_writers"]) == ("killed", 0)


@pytest.mark.parametrize("spill", ["kept", "deleted"])
def test_a_live_job_of_a_container_is_not_declared_dead(tmp_path, pluto_server, spill):
    """While it runs, the host's readers see it alive: by its spill lock, or (its spill file
    deleted by a /tmp cleaner) by its process, which the host sees under another pid."""
    d = tmp_path / "j"
    job = Boxed(d, "boxed-live")
    try:
        if spill == "deleted":
            _delete_spills(d)
        (row,) = status_rows(d)
        assert (row["state"], row["live_writers"]) == ("running", 1)
        delivered = cli("run", "--dir", str(d), "--once", env=clean_env(**pluto_server.env()))
        assert delivered.returncode == 0, delivered.stderr
        assert _statuses(d) == []  # no FAILED {reason: killed} journaled for a live job
        (row,) = status_rows(d)
        assert (row["state"], row["live_writers"]) == ("running", 1)
        job.finish()
    finally:
        job.close()
    (row,) = status_rows(d)
    assert (row["state"], row["live_writers"]) == ("finished", 0)
    pushed = cli("push", str(d), env=clean_env(**pluto_server.env()))
    assert pushed.returncode == 0, pushed.stderr
    (run,) = pluto_server.list_runs("boxed-live")
    assert run["status"] == "COMPLETED"
    steps = [p["step"] for p in pluto_server.metrics(run["id"], "boxed-live", "train/loss")]
    assert steps == list(range(steps[0], steps[0] + 100))


def _status_from_a_sibling(d: Path) -> dict:
    """``plutosync status`` in a PID namespace of its own with its own /proc: it sees none of
    the host's processes (a daemon in a sidecar container)."""
    res = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-m",
                          "syncd", "status", "--dir", str(d), "--json"],
                         capture_output=True, text=True, env=clean_env(), cwd=ROOT, timeout=90)
    assert res.returncode == 0, res.stderr
    (row,) = json.loads(res.stdout)
    return row


JOB_HERE = """
import sys, pluto_offline as pluto
run = pluto.init(project="here", name="here", run_id="here")
run.log({"x": 1})
run.flush()
print("logged", flush=True)
sys.stdin.readline()
"""


def test_a_reader_that_cannot_see_the_writer_trusts_the_spill_lock_then_declares_nothing(
        tmp_path):
    """From a namespace that sees none of the job's processes: the spill lock decides while
    the file is there; once it is gone, the writer is not declared dead (it may run out of
    sight), until a reader that can see its namespace (here the host's) passes."""
    d = tmp_path / "j"
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(JOB_HERE)], text=True,
                            env=clean_env(PLUTO_DIR=str(d), PLUTO_OFFLINE_AUTOSTART="0"),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == "logged\n"
        assert _status_from_a_sibling(d)["state"] == "running"  # its spill lock
        _delete_spills(d)
        assert _status_from_a_sibling(d)["state"] == "running"  # cannot tell: alive
        assert status_rows(d)[0]["state"] == "running"  # the host sees its process
        proc.kill()
        proc.wait(30)
        # out of sight, no spill lock, no process: still not declared dead from there
        assert _status_from_a_sibling(d)["state"] == "running"
        if _in_the_initial_pid_namespace():
            assert (status_rows(d)[0]["state"]) == "killed"  # the host's reader can tell
    finally:
        proc.kill()
        proc.wait(30)


def test_a_dead_writer_of_another_namespace_with_its_spill_file_reads_killed_from_a_sibling(
        tmp_path):
    d = tmp_path / "j"
    res = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import os, pluto_offline as pluto
        run = pluto.init(project="gone", name="gone", run_id="gone")
        run.log({"x": 1})
        run.flush()
        os._exit(0)   # no finish: the spill file stays, unlocked
        """)], env=clean_env(PLUTO_DIR=str(d), PLUTO_OFFLINE_AUTOSTART="0"),
        capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    row = _status_from_a_sibling(d)
    assert (row["state"], row["live_writers"]) == ("killed", 0)


# ----------------------------------------------------------------------- journal compatibility


def _journal_with_writer(d: Path, pid: int, host: str) -> None:
    with journal.Journal.open(d) as j, j.transaction():
        key = journal.add_run(j, project="p", run_id="r", name="r")
        journal.append_event(j, key, "create", payload={"config": {}})
        journal.add_writer(j, key, "w", pid, host)


def test_a_writer_records_its_kernel_and_pid_namespace_only_for_itself(tmp_path):
    _journal_with_writer(tmp_path / "own", os.getpid(), os.uname().nodename)
    with journal.Journal.open(tmp_path / "own", readonly=True) as j:
        rows = j.conn.execute("SELECT writer, boot, pid_ns FROM writer_ns").fetchall()
        assert rows == [("w", *liveness.identity())]
        assert liveness.running_writers(j) == {"w"}  # this process, in this namespace
        assert j.schema == journal.SCHEMA_VERSION  # an optional table: no new schema
    _journal_with_writer(tmp_path / "other", 1, "node-b")  # another's pid: nothing to record
    with journal.Journal.open(tmp_path / "other", readonly=True) as j:
        assert not j.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'writer_ns'").fetchone()
        assert liveness.running_writers(j) == set()  # another host's: its spill lock only


def test_a_journal_of_an_older_version_reads_as_before(tmp_path):
    """Writers without an identity (no ``writer_ns`` table): the pid and start time on the
    same host name, as before; read-only and immutable opens read it too."""
    d = tmp_path / "old"
    _journal_with_writer(d, os.getpid(), os.uname().nodename)
    conn = sqlite3.connect(d / journal.JOURNAL_FILE)
    conn.execute("DROP TABLE writer_ns")
    conn.commit()
    conn.close()
    for opener in (lambda: journal.Journal.open(d, readonly=True),
                   lambda: journal.Journal.peek(d)):
        with opener() as j:
            assert liveness.running_writers(j) == {"w"}
            assert journal.live_writer_ids(j) == {"w"}
    (row,) = status_rows(d)
    assert (row["state"], row["live_writers"]) == ("running", 1)
