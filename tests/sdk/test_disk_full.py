"""A journal on a disk that fills up (issue 12 item 14), on a real 4 MiB tmpfs (root only).

What a user checks: training goes on, the records the disk could not take are counted and the
count shows in ``plutosync status`` ("N records dropped: disk full") once there is space, the
run's end is the one the job reached (COMPLETED, not FAILED killed), and everything kept is on
the server after a push. How cheap ``log()`` stays while the disk is full is measured by
``scripts/bench_disk_full.py``, not here (no timed assertions).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pluto_offline import journal
from pluto_offline.outage import CAP_S, FIRST_S
from tests.fixtures.daemon import DaemonProcess

from .conftest import child_env, run_child

# log() of 10 floats: 120 bytes a record in the spill, so ~8,000 fill its first MiB
FILL = """
def fill(d):
    try:                                       # the disk, full to the last block
        with open(d + "/filler", "wb") as f:   # (already full: open itself may fail)
            while True:
                f.write(b"\\0" * 65536)
                f.flush()
    except OSError:
        pass
values = lambda s: {f"m{k}": float(s) for k in range(10)}
"""


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A fresh 4 MiB tmpfs, unmounted after the test."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def plutosync(server, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "syncd", *args], capture_output=True,
                          text=True, timeout=60, env=child_env(**server.env()))


def server_steps(server, jdir: Path, run_id: str) -> tuple[dict, set[int]]:
    with journal.Journal.open(jdir) as j:
        row = journal.find_run(j, project="full", run_id=run_id)
        assert row is not None and row.server_id, f"{run_id} not delivered"
    run = server.get_run(row.server_id)
    return run, {p["step"] for p in server.metrics(row.server_id, "full", "m0")}


def test_a_full_disk_drops_counted_records_and_the_run_still_ends_completed(
        small_disk, pluto_server):
    code = FILL + """
import os, sys, pluto_offline as pluto
d = sys.argv[1]
run = pluto.init(dir=d + "/j", project="full", run_id="full", name="full",
                 settings={"autostart": False, "flush_interval": 0.01})
for s in range(100):
    run.log(values(s), step=s)
run.flush()
fill(d)
for s in range(100, 12100):                  # the spill fills, then records are dropped
    run.log(values(s), step=s)
try:
    run.update_config({"lr": 0.1})
except pluto.JournalError as exc:
    print("update_config:", exc, flush=True)
os.unlink(d + "/filler")                      # space again: the next fold goes through
run.flush()
print("flushed", flush=True)
fill(d)                                       # full again, up to the end of the job
for s in range(12100, 12200):
    run.log(values(s), step=s)
run.finish()                                  # cannot be journaled now: kept in the spill
print("finished", flush=True)
"""
    r = run_child(code, str(small_disk))
    assert r.returncode == 0 and "finished" in r.stdout, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert "update_config: journal" in r.stdout and "the disk is full" in r.stdout
    # one warning when records start to be dropped, one when the journal takes them again
    assert r.stderr.count("log records are dropped until it can be") == 1, r.stderr
    told = re.search(r"the journal can be written again\. While it could not, (\d+) records "
                     r"dropped: disk full \(the count is journaled", r.stderr)
    assert told, r.stderr
    assert "could not journal its end (COMPLETED) now" in r.stderr
    jdir = small_disk / "j"

    # the count is journaled already (the job wrote it when space came back); status reads
    # it read-only, before any recovery
    status = plutosync(pluto_server, "status", "--dir", str(jdir), "--json")
    assert status.returncode == 0, status.stderr
    (row,) = json.loads(status.stdout)
    (dropped,) = row["dropped"]
    assert dropped == {"records": int(told[1]), "reason": "disk full"}

    (small_disk / "filler").unlink()          # space again; a push recovers and delivers
    push = plutosync(pluto_server, "push", str(jdir))
    assert push.returncode == 0, push.stdout + push.stderr
    run, steps = server_steps(pluto_server, jdir, "full")
    assert run["status"] == "COMPLETED"
    # every step is either on the server or counted as dropped: nothing vanished silently
    assert len(steps) + dropped["records"] == 12200
    assert set(range(100)) <= steps and set(range(12100, 12200)) <= steps
    table = plutosync(pluto_server, "status", "--dir", str(jdir))
    assert f"dropped full/full: {dropped['records']} records dropped: disk full" in table.stdout, \
        table.stdout
    assert "finished" in table.stdout


def test_a_job_killed_while_the_disk_is_full_leaves_its_drop_count_for_recovery(
        small_disk, jdir):
    code = FILL + """
import os, signal, sys, pluto_offline as pluto
d = sys.argv[1]
run = pluto.init(dir=d + "/j", project="full", run_id="killed",
                 settings={"autostart": False, "flush_interval": 0.01})
run.log(values(0), step=0)
run.flush()
fill(d)
for s in range(1, 10001):
    run.log(values(s), step=s)
os.kill(os.getpid(), signal.SIGKILL)          # no end, and the count only in the spill
"""
    r = run_child(code, str(small_disk))
    assert r.returncode == -9, r.stderr
    (small_disk / "filler").unlink()
    with journal.Journal.open(small_disk / "j") as j:
        journal.recover(j)                     # as the next init() or plutosync pass does
        steps = {s for (p,) in j.conn.execute("SELECT payload FROM events WHERE kind = "
                                               "'metrics'")
                 for s, _t, _d in journal.unpack_metrics(p)}
        from pluto_offline.journal import drops
        (count,) = drops.dropped(j)
        last = json.loads(j.conn.execute("SELECT payload FROM events WHERE kind = 'status'")
                          .fetchone()[0])
    assert count.reason == "disk full" and count.records > 0
    assert len(steps) + count.records == 10001
    assert last == {"status": "FAILED", "metadata": {"reason": "killed"}}


def test_a_full_disk_before_the_first_fold_keeps_a_close_for_recovery(small_disk,
                                                                      pluto_server):
    """close() (an eval job) while the disk is full: kept, and journaled as a close."""
    code = FILL + """
import sys, pluto_offline as pluto
d = sys.argv[1]
run = pluto.init(dir=d + "/j", project="full", run_id="eval",
                 settings={"autostart": False, "flush_interval": 0.01})
fill(d)
run.log({"acc": 0.5}, step=7)
run.close()
"""
    r = run_child(code, str(small_disk))
    assert r.returncode == 0, r.stderr
    assert "could not journal its end (close) now" in r.stderr
    (small_disk / "filler").unlink()
    status = plutosync(pluto_server, "status", "--dir", str(small_disk / "j"), "--json")
    (row,) = json.loads(status.stdout)
    assert row["dropped"] == []  # nothing was dropped: the record waited in the spill
    push = plutosync(pluto_server, "push", str(small_disk / "j"))
    assert push.returncode == 0, push.stdout + push.stderr
    status = plutosync(pluto_server, "status", "--dir", str(small_disk / "j"), "--json")
    (row,) = json.loads(status.stdout)
    assert row["state"] == "closed"
    with journal.Journal.open(small_disk / "j") as j:
        row = journal.find_run(j, project="full", run_id="eval")
    assert [p["step"] for p in pluto_server.metrics(row.server_id, "full", "acc")] == [7]
    assert pluto_server.get_run(row.server_id)["status"] == "RUNNING"


def most_tries(elapsed: float) -> int:
    """The folds the backoff lets through in ``elapsed`` seconds of a full disk: one at once,
    then one each time a delay has passed (``FIRST_S`` doubling up to ``CAP_S``)."""
    tries, waited, delay = 1, 0.0, 0.0
    while True:
        delay = min(CAP_S, delay * 2 or FIRST_S)
        waited += delay
        if waited > elapsed:
            return tries
        tries += 1


def test_while_the_disk_is_full_log_does_not_retry_the_fold_per_call(small_disk):
    """20,000 log() calls on a full disk (the spill fills, then records are dropped): the
    journal is tried as the backoff allows, not by every call (each try re-reads the spill
    and fails a transaction: ~1,400x slower log() in issue 12 item 14)."""
    code = FILL + """
import json, os, sys, time, pluto_offline as pluto
d = sys.argv[1]
run = pluto.init(dir=d + "/j", project="full", run_id="cheap",
                 settings={"autostart": False, "flush_interval": 0.01})
for s in range(100):
    run.log(values(s), step=s)
run.flush()
fill(d)
outage = run._outage                          # the writer's backoff and counts
t0 = time.monotonic()
before = outage.failures
calls = 0
for s in range(100, 20100):
    run.log(values(s), step=s)
    calls += 1
    if outage.failures - before > 1000:       # retried per call: no need to wait for 20,000
        break
after = outage.failures                       # read before the clock: no later try counted
elapsed = time.monotonic() - t0
print(json.dumps({"calls": calls, "tries": after - before, "elapsed": elapsed,
                  "dropped": outage.total()}))
os.unlink(d + "/filler")
run.finish()
"""
    r = run_child(code, str(small_disk))
    assert r.returncode == 0, r.stdout + r.stderr
    got = json.loads(r.stdout.splitlines()[-1])
    # the disk really was full: folds failed, and the spill filled up to dropping records
    # (a drop means log() reached the drain, where a per-call retry would happen)
    assert got["tries"] > 0 and got["dropped"] > 0, got
    # the writer thread checks the backoff outside the fold lock, so it may try once more in
    # each window, right after log()'s drain did; plus one in flight when the clock started
    bound = 2 * (most_tries(got["elapsed"]) + 1)
    assert got["tries"] <= bound and got["calls"] == 20_000, got
    assert bound < got["dropped"], got  # else the check says nothing: per call would pass


_ = DaemonProcess  # (the push above is plutosync's own process, as a user runs it)
