"""A wall clock stepped backwards (issue 11, item 10), mid-run and between a job and its resume.

The step is real as the job sees it: a small ``LD_PRELOAD`` library, built here with the C
compiler, takes a number of seconds from a file off every ``clock_gettime(CLOCK_REALTIME)`` of
the process (the test cannot step the machine's clock: other work shares it). The server keeps
the point with the later time per (run, metric, step), so a step re-logged after the clock went
back must still reach it later than the first: within one journal, a run's times never go
backwards.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from pluto_offline import journal
from syncd.replayer import drain
from tests.fixtures.daemon import replayer_for

from .conftest import events, run_child

SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
int clock_gettime(clockid_t id, struct timespec *ts) {
    static int (*real)(clockid_t, struct timespec *);
    if (!real) real = dlsym(RTLD_NEXT, "clock_gettime");
    int r = real(id, ts);
    const char *path = getenv("CLOCK_BEHIND_FILE");
    if (r == 0 && id == CLOCK_REALTIME && path) {
        FILE *f = fopen(path, "r");
        long behind = 0;
        if (f) { if (fscanf(f, "%ld", &behind) != 1) behind = 0; fclose(f); }
        ts->tv_sec -= behind;
    }
    return r;
}
"""


@pytest.fixture(scope="module")
def clock_shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler to build the clock-stepping library")
    d = tmp_path_factory.mktemp("clock")
    (d / "shim.c").write_text(SHIM)
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(d / "shim.so"), str(d / "shim.c"),
                    "-ldl"], check=True)
    return d / "shim.so"


JOB = """
import pathlib, sys, time, pluto_offline as pluto
behind = pathlib.Path(sys.argv[2])
run = pluto.init(dir=sys.argv[1], project="proj", run_id="clock", resume=sys.argv[3] == "resume")
if sys.argv[3] == "start":
    for s in range(1, 101):
        run.log({"v": 1.0}, step=s)
    run.flush()
    before = time.time()
    behind.write_text("3600")  # the clock is stepped back one hour, mid-run
    print(before, time.time())  # the job's clock before and after the step
    for s in range(91, 101):
        run.log({"v": 2.0}, step=s)
else:  # resumed while the clock is still an hour behind
    print(time.time())
    for s in range(91, 101):
        run.log({"v": 3.0}, step=s)
"""
HOUR = pytest.approx(3600, abs=300)  # the step, give or take the time the job takes


def _delivered(server, jdir: Path) -> dict:
    """The run on the server once the journal is delivered, with its ``v`` points by step."""
    with journal.Journal.open(jdir) as j:
        assert drain(replayer_for(jdir, server), deadline=None)
        row = journal.find_run(j, project="proj", run_id="clock")
    run = server.get_run(row.server_id)
    run["v"] = {p["step"]: p["value"] for p in server.metrics(row.server_id, "proj", "v")}
    return run


def _times(jdir: Path) -> list[int]:
    """Every time the job's writers journaled for the run, in journal order (events and
    records; console lines, journaled by a helper process on its own schedule, apart)."""
    out = []
    for e in events(jdir):
        if e.kind == "logs":
            continue
        out.append(e.time)
        if e.kind == "metrics":
            out += [t for _, t, _ in journal.unpack_metrics(e.payload)]
    return out


def test_a_clock_stepped_back_never_makes_a_later_log_of_a_step_lose(
        tmp_path: Path, clock_shim: Path, pluto_server_module):
    jdir, behind = tmp_path / "j", tmp_path / "behind"
    behind.write_text("0")
    env = {"LD_PRELOAD": str(clock_shim), "CLOCK_BEHIND_FILE": str(behind)}
    r = run_child(JOB, str(jdir), str(behind), "start", **env)
    assert r.returncode == 0, r.stderr
    before, after = map(float, r.stdout.split())
    assert before - after == HOUR  # the job's clock really went back: the test is not vacuous
    assert _delivered(pluto_server_module, jdir)["v"] == {
        s: 1.0 if s <= 90 else 2.0 for s in range(1, 101)}

    r = run_child(JOB, str(jdir), str(behind), "resume", **env)
    assert r.returncode == 0, r.stderr
    assert time.time() - float(r.stdout) == HOUR  # resumed with its clock still behind
    run = _delivered(pluto_server_module, jdir)
    assert run["v"] == {s: 1.0 if s <= 90 else 3.0 for s in range(1, 101)}
    assert run["status"] == "COMPLETED"  # the resume's end, timed after the first job's
    times = _times(jdir)
    assert times == sorted(times)  # journal order is time order, whatever the clock did
    # each job printed one line with its clock behind: timed in order, not an hour back
    lines = [e.time for e in events(jdir) if e.kind == "logs"]
    assert len(lines) == 2 and lines == sorted(lines) and lines[0] >= times[0], (lines, times)
