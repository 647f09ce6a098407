"""Signals a job meets (issue 11, items 2-4): real child processes, real signals, a real PID
namespace (``unshare``) for PID 1.

- handlers are installed at the first ``init()`` on the main thread; an ``init()`` on another
  thread before that warns once;
- SIGHUP ends the run TERMINATED like SIGTERM, then the process dies by it; an ignored SIGHUP
  (``nohup``) ends nothing;
- a user's handler that lets the process go on keeps the run open;
- as PID 1, where the re-raised signal's default action is ignored, the process exits
  128 + N after journaling TERMINATED instead of training on.

Every job starts as a shell would start it (``shell_signals``), so a test run started under
``nohup`` (SIGHUP ignored, inherited by children) still tests SIGHUP, and a job still running
when a test fails or times out is killed at its end.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from .conftest import REPO, child_env, events, metric_lines, script, shell_signals, statuses
from .test_names import deliver, server_run

THREAD_FIRST = """
import sys, threading, pluto_offline as pluto
box = []
t = threading.Thread(target=lambda: box.append(pluto.init(dir=sys.argv[1], project="p",
                                                          run_id="from-thread")))
t.start(); t.join()
{main}
print("ready", flush=True)
i = 0
while True:
    pluto.log({{"x": float(i)}})
    i += 1
"""
WARNING = "init() called outside the main thread"


Start = Callable[..., tuple[subprocess.Popen, str]]


@pytest.fixture
def start() -> Iterator[Start]:
    """``start(args, **popen)``: a job started as a shell would (no signal ignored or blocked,
    whatever this process inherited: ``nohup`` ignores SIGHUP), returned with the first line it
    printed. A job still running at the test's end (a timeout, a failed assertion) is killed."""
    jobs: list[subprocess.Popen] = []

    def launch(args: list[str], **kw) -> tuple[subprocess.Popen, str]:
        p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=child_env(), cwd=REPO, preexec_fn=shell_signals, **kw)
        jobs.append(p)
        return p, p.stdout.readline().strip()

    try:
        yield launch
    finally:
        for p in jobs:
            if p.poll() is None:
                p.kill()
            p.wait()
            for stream in (p.stdin, p.stdout, p.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def ready(start: Start, jdir) -> Callable[..., subprocess.Popen]:
    """``ready(code, **popen)``: the job ``code`` (``sys.argv[1]`` = ``jdir``), once it printed
    ``ready``."""
    def launch(code: str, **kw) -> subprocess.Popen:
        p, first = start(script(code) + [str(jdir)], **kw)
        assert first == "ready", p.stderr.read()
        return p
    return launch


def test_a_later_main_thread_init_installs_the_handlers_an_earlier_thread_could_not(
        jdir, ready, pluto_server):
    main = 'pluto.init(dir=sys.argv[1], project="p", run_id="from-main")'
    p = ready(THREAD_FIRST.format(main=main))
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=30)
    assert p.returncode == -signal.SIGTERM
    assert p.stderr.read().count(WARNING) == 1
    assert statuses(jdir) == [{"status": "TERMINATED", "metadata": {"signal": "SIGTERM"}}] * 2
    deliver(pluto_server, jdir)  # plutosync push: what the user sees on the server
    for run_id in ("from-thread", "from-main"):
        assert server_run(pluto_server, jdir, "p", run_id)["status"] == "TERMINATED", run_id


def test_an_init_on_a_thread_only_warns_that_a_signal_is_not_journaled(jdir, ready):
    p = ready(THREAD_FIRST.format(main=""))
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=30)
    assert p.returncode == -signal.SIGTERM
    err = p.stderr.read()
    assert err.count(WARNING) == 1 and "reported FAILED killed" in err
    assert statuses(jdir) == [{"status": "FAILED", "metadata": {"reason": "killed"}}]


LOOP = """
import signal, sys, pluto_offline as pluto
{before}
run = pluto.init(dir=sys.argv[1], project="p", run_id="r")
print("ready", flush=True)
{loop}
"""
FOREVER = """
i = 0
while True:
    run.log({"x": float(i)})
    i += 1
"""


def test_sighup_terminates_then_the_process_dies_by_it(jdir, ready):
    p = ready(LOOP.format(before="", loop=FOREVER))
    p.send_signal(signal.SIGHUP)
    p.wait(timeout=30)
    assert p.returncode == -signal.SIGHUP
    assert statuses(jdir) == [{"status": "TERMINATED", "metadata": {"signal": "SIGHUP"}}]


def test_an_ignored_sighup_nohup_ends_nothing(jdir, ready):
    code = LOOP.format(before="signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as nohup does",
                       loop="run.log({'x': 1.0}); sys.stdin.readline(); run.log({'x': 2.0})")
    p = ready(code, stdin=subprocess.PIPE)
    p.send_signal(signal.SIGHUP)  # discarded by the kernel: the job trains on
    p.communicate("go\n", timeout=30)
    assert p.returncode == 0
    assert [line["data"]["x"] for line in metric_lines(jdir)] == [1.0, 2.0]
    assert statuses(jdir) == [{"status": "COMPLETED", "metadata": None}]


def test_a_users_handler_that_lets_the_job_go_on_keeps_the_run_open(jdir, ready):
    # a graceful stop: the handler sets a flag, the loop saves a checkpoint and ends normally
    before = "stop = []\nsignal.signal(signal.SIGTERM, lambda s, f: stop.append(s))"
    loop = """
i = 0
while not stop:
    run.log({"x": float(i)})
    i += 1
run.log({"checkpoint": 1.0})
"""
    p = ready(LOOP.format(before=before, loop=loop))
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=30)
    assert p.returncode == 0
    assert metric_lines(jdir)[-1]["data"] == {"checkpoint": 1.0}
    assert statuses(jdir) == [{"status": "COMPLETED", "metadata": None}]


def _pid_namespaces() -> str | None:
    """Why a PID namespace cannot be made here, or None when it can."""
    if shutil.which("unshare") is None:
        return "no unshare(1)"
    r = subprocess.run(["unshare", "--pid", "--fork", "--map-root-user", "true"],
                       capture_output=True, text=True)
    return None if r.returncode == 0 else f"unshare refused: {r.stderr.strip()}"


PID1 = """
import os, sys, pluto_offline as pluto
assert os.getpid() == 1, os.getpid()
# /proc is the host's (no --mount-proc): NSpid gives this process's pid outside, then inside
outer = [line.split()[1] for line in open("/proc/self/status") if line.startswith("NSpid")][0]
run = pluto.init(dir=sys.argv[1], project="p", run_id="r")
print(outer, flush=True)
i = 0
while True:
    run.log({"x": float(i)})
    i += 1
"""


@pytest.mark.skipif(_pid_namespaces() is not None, reason=str(_pid_namespaces()))
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_as_pid_1_the_job_exits_128_plus_n_after_journaling_terminated(jdir, start, signum):
    # --kill-child: if the test kills unshare (a failure, a timeout), its PID 1 dies with it
    p, first = start(["unshare", "--pid", "--kill-child", "--map-root-user", sys.executable,
                      "-c", PID1, str(jdir)])
    assert first.isdigit(), p.stderr.read()
    outer = int(first)
    os.kill(outer, signum)  # as `docker stop` does, from outside the namespace
    p.wait(timeout=30)
    assert p.returncode == 128 + signum, p.stderr.read()  # unshare passes the exit code on
    name = signal.Signals(signum).name
    assert statuses(jdir) == [{"status": "TERMINATED", "metadata": {"signal": name}}]
    assert [e.kind for e in events(jdir)][-1] == "status"
