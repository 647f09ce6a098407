"""plutosync status: local states, honest delivery counts, --json/--check, error messages."""

from __future__ import annotations

import fcntl
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from pluto_offline import journal as J
from tests.ops.conftest import ROOT, Builder, by_run_id, cli, needs_sdk, run_inproc, status_json


def test_states_and_counts(builder: Builder, tmp_path: Path) -> None:
    done = builder.run("done", end="COMPLETED")
    builder.run("failed", end="FAILED")
    builder.run("term", end="TERMINATED")
    builder.run("closed", end="closed")
    builder.run("killed", end=None)
    builder.run("live", end=None)
    builder.run("nowriter", writer=False, end="COMPLETED")
    builder.hold("live")
    builder.ack_all(done, server_id=7, display_id="PRO-7", url="http://x/PRO-7")

    rows = by_run_id(status_json(tmp_path / "journal"))
    assert {k: r["state"] for k, r in rows.items()} == {
        "done": "finished", "failed": "failed", "term": "terminated", "closed": "closed",
        "killed": "killed", "live": "running", "nowriter": "finished",
    }
    d = rows["done"]
    assert (d["events"], d["pending"], d["delivered"], d["rejected"], d["synced"]) == (5, 0, 5, 0, True)
    assert (d["display_id"], d["server_id"], d["url"]) == ("PRO-7", 7, "http://x/PRO-7")
    assert rows["live"]["live_writers"] == 1 and rows["killed"]["live_writers"] == 0
    assert rows["killed"]["pending"] == 4 and rows["killed"]["synced"] is False
    assert set(d) >= {"journal", "project", "name", "run_id", "state", "pending", "delivered",
                      "rejected", "synced", "last_error", "conflict", "rejections"}


def test_rejected_is_not_synced_and_reason_shown(builder: Builder, tmp_path: Path) -> None:
    key = builder.run("r", end="COMPLETED")
    builder.ack_all(key, server_id=1, display_id="PRO-1")
    bad = J.pending_events(builder.j, key, after=0)[1]
    J.reject(builder.j, bad, code=400, reason="Invalid [config] JSON")
    other = builder.run("e", metrics=0, end="COMPLETED")
    J.record_error(builder.j, other, "server unreachable: connection refused", next_try=2e9)

    rows = by_run_id(status_json(tmp_path / "journal"))
    r = rows["r"]
    assert (r["pending"], r["rejected"], r["delivered"], r["synced"]) == (0, 1, 4, False)
    assert r["rejections"] == [{"seq": bad.seq, "kind": "metrics", "code": 400,
                                "reason": "Invalid [config] JSON"}]
    assert rows["e"]["last_error"] == "server unreachable: connection refused"

    table = cli("status", "--dir", str(tmp_path / "journal"))
    assert table.returncode == 0, table.stderr
    out = table.stdout
    assert "rejected proj/n-r event" in out and "400 Invalid [config] JSON" in out
    assert "error proj/n-e: server unreachable: connection refused (attempt 1" in out
    assert "2 runs, 0 synced, 1 with pending events, 1 with rejected events" in out
    assert "PRO-1" in out


def test_check_exit_code(builder: Builder, tmp_path: Path) -> None:
    key = builder.run("a", end="COMPLETED")
    d = str(tmp_path / "journal")
    assert cli("status", "--dir", d, "--check").returncode == 1
    builder.ack_all(key)
    res = cli("status", "--dir", d, "--check")
    assert res.returncode == 0 and "1 run, 1 synced" in res.stdout


def test_several_journals_and_a_db_path(builder: Builder, tmp_path: Path) -> None:
    builder.run("a", end="COMPLETED")
    other = Builder(tmp_path / "other.db")
    other.run("b", end="closed")
    other.close()
    rows = status_json(tmp_path / "journal", tmp_path / "other.db")
    assert [(r["run_id"], Path(r["journal"]).name) for r in rows] == [
        ("a", "journal.db"), ("b", "other.db")]
    table = cli("status", "--dir", str(tmp_path / "journal"), "--dir", str(tmp_path / "other.db"))
    assert "journal" in table.stdout.splitlines()[0] and str(tmp_path / "other.db") in table.stdout


def test_empty_journal_and_read_only_use(builder: Builder, tmp_path: Path) -> None:
    builder.j.close()
    file = tmp_path / "journal" / "journal.db"
    before = hashlib.sha256(file.read_bytes()).hexdigest()
    res = cli("status", "--dir", str(tmp_path / "journal"))
    assert res.returncode == 0 and "no runs in" in res.stdout
    assert hashlib.sha256(file.read_bytes()).hexdigest() == before
    builder.j = J.Journal.open(tmp_path / "journal")


def test_default_dir_from_env(builder: Builder, tmp_path: Path) -> None:
    builder.run("a", end="COMPLETED")
    rows = status_json(env={"PLUTO_DIR": str(tmp_path / "journal")})
    assert [r["run_id"] for r in rows] == ["a"]


def test_error_messages(tmp_path: Path, capsys) -> None:
    code, _, err = run_inproc(capsys, "status", "--dir", str(tmp_path / "nowhere"))
    assert code == 2
    assert err.startswith("plutosync status: no journal at ") and "check the path" in err

    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(b"this is not sqlite at all" * 200)
    code, _, err = run_inproc(capsys, "status", "--dir", str(damaged))
    assert code == 2 and "is damaged" in err and "plutosync export" in err

    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as c:
        c.execute("CREATE TABLE t (x)")
    code, stdout, err = run_inproc(capsys, "status", "--dir", str(foreign), "--json")
    assert code == 2 and "is not a pluto-offline journal" in err
    assert stdout == ""
    # a subprocess, as scripts see it: the message on stderr, exit 2, nothing on stdout
    res = cli("status", "--dir", str(damaged), "--check")
    assert (res.returncode, res.stdout) == (2, "") and "is damaged" in res.stderr


# One job per ending, driven by argv[2]; "wait" blocks on stdin until the test signals it.
JOB = textwrap.dedent("""
    import os, signal, sys
    import pluto_offline as pluto
    how = sys.argv[2]
    run = pluto.init(dir=sys.argv[1], project="proj", run_id=how, name=how)
    run.log({"x": 1.0})
    run.flush()
    print("ready", flush=True)
    if how == "killed":
        os.kill(os.getpid(), signal.SIGKILL)
    if how in ("running", "terminated"):
        sys.stdin.readline()
    if how == "failed":
        raise RuntimeError("boom")
    if how == "closed":
        run.close()
""")


@needs_sdk
def test_states_from_real_jobs(tmp_path: Path) -> None:
    jdir = tmp_path / "journal"
    env = {**os.environ, "PLUTO_OFFLINE_AUTOSTART": "0"}
    hows = ["running", "killed", "finished", "failed", "closed", "terminated"]
    J.Journal.open(jdir).close()  # created once, not raced by six first inits
    jobs = {how: subprocess.Popen([sys.executable, "-c", JOB, str(jdir), how], cwd=ROOT, env=env,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True) for how in hows}
    try:
        for job in jobs.values():
            assert job.stdout.readline().strip() == "ready"
        jobs["terminated"].send_signal(signal.SIGTERM)
        for how in ("killed", "finished", "failed", "closed", "terminated"):
            jobs[how].wait(timeout=30)
        rows = by_run_id(status_json(jdir))
        assert {how: rows[how]["state"] for how in hows} == {how: how for how in hows}
        assert rows["running"]["live_writers"] == 1
        assert all(rows[h]["pending"] > 0 and not rows[h]["synced"] for h in hows)
    finally:
        jobs["running"].stdin.close()
        for job in jobs.values():
            job.kill()
            job.wait()


def test_names_the_daemon_delivering_the_journal(builder: Builder, tmp_path: Path) -> None:
    builder.run("a", end="COMPLETED")
    jdir = tmp_path / "journal"
    res = cli("status", "--dir", str(jdir))
    assert f"{jdir}: no plutosync is delivering it; start one with `plutosync run --dir {jdir}`" \
        in res.stdout
    fd = os.open(jdir / "journal.db.lock", os.O_CREAT | os.O_RDWR, 0o600)  # as syncd/lock.py
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.pwrite(fd, b"4242\n", 0)
    try:
        assert status_json(jdir)[0]["daemon_pid"] == 4242
        assert f"{jdir}: delivered by plutosync (pid 4242)" in cli("status", "--dir", str(jdir)).stdout
    finally:
        os.close(fd)
