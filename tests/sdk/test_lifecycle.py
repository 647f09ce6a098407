"""How a process's end reaches the journal: real child processes and real signals."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from pluto_offline import journal

from .conftest import child_env, events, metric_lines, run_child, script, shell_signals, statuses

START = """
import sys, pluto_offline as pluto
run = pluto.init(dir=sys.argv[1], project="p", run_id="r")
for i in range(3):
    run.log({"x": float(i)})
"""


def test_normal_exit_completes(jdir):
    r = run_child(START, str(jdir))
    assert r.returncode == 0, r.stderr
    assert statuses(jdir) == [{"status": "COMPLETED", "metadata": None}]
    assert len(metric_lines(jdir)) == 3


def test_sys_exit_code_is_ignored_like_the_stock_sdk(jdir):
    r = run_child(START + "sys.exit(3)\n", str(jdir))
    assert r.returncode == 3
    assert statuses(jdir) == [{"status": "COMPLETED", "metadata": None}]


def test_uncaught_exception_fails_with_traceback(jdir):
    r = run_child(START + "raise RuntimeError('boom')\n", str(jdir))
    assert r.returncode == 1 and "RuntimeError: boom" in r.stderr  # the usual traceback too
    [status] = statuses(jdir)
    assert status["status"] == "FAILED"
    assert status["metadata"]["exception"] == "RuntimeError: boom"
    assert "Traceback (most recent call last)" in status["metadata"]["traceback"]
    assert len(metric_lines(jdir)) == 3


def test_keyboard_interrupt_terminates(jdir):
    r = run_child(START + "raise KeyboardInterrupt\n", str(jdir))
    assert r.returncode != 0
    assert statuses(jdir) == [{"status": "TERMINATED", "metadata": {"signal": "SIGINT"}}]


def test_close_changes_no_status_even_at_exit(jdir):
    r = run_child(START + "run.close()\nrun.finish()\n", str(jdir))
    assert r.returncode == 0, r.stderr
    assert [e.kind for e in events(jdir)][-1] == "close"
    assert statuses(jdir) == []


def test_finish_code_fails(jdir):
    r = run_child(START + "run.finish(code=2)\n", str(jdir))
    assert r.returncode == 0, r.stderr
    assert statuses(jdir) == [{"status": "FAILED", "metadata": {"exit_code": 2}}]


LOOP = START + """
print("ready", flush=True)
i = 0
while True:
    run.log({"y": float(i)})
    i += 1
"""


def _signal_child(jdir, signum, code=LOOP) -> subprocess.Popen:
    p = subprocess.Popen(script(code) + [str(jdir)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=child_env(),
                         preexec_fn=shell_signals)
    assert p.stdout.readline().strip() == "ready"
    time.sleep(0.1)
    p.send_signal(signum)
    p.wait(timeout=30)
    return p


def test_sigterm_journals_terminated_then_dies_by_the_signal(jdir):
    p = _signal_child(jdir, signal.SIGTERM)
    assert p.returncode == -signal.SIGTERM  # chained to SIG_DFL: dies as it would have
    assert statuses(jdir) == [{"status": "TERMINATED", "metadata": {"signal": "SIGTERM"}}]
    j = journal.Journal.open(jdir)
    assert journal.writers(j)[0]["ended_how"] == "TERMINATED"
    assert not list((jdir / "spill").iterdir())
    assert len(metric_lines(jdir)) > 3


def test_sigint_journals_terminated_then_raises_keyboard_interrupt(jdir):
    p = _signal_child(jdir, signal.SIGINT)
    assert "KeyboardInterrupt" in p.stderr.read()
    assert statuses(jdir) == [{"status": "TERMINATED", "metadata": {"signal": "SIGINT"}}]


def test_sigterm_chains_to_the_users_handler(jdir):
    code = """
import signal, sys
seen = []
signal.signal(signal.SIGTERM, lambda s, f: (print("user handler", flush=True), sys.exit(7)))
""" + LOOP
    p = _signal_child(jdir, signal.SIGTERM, code)
    assert p.returncode == 7
    assert "user handler" in p.stdout.read()
    assert statuses(jdir) == [{"status": "TERMINATED", "metadata": {"signal": "SIGTERM"}}]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_state_changes_is_journaled_after_the_transaction(jdir, signum):
    code = START + """
print("ready", flush=True)
i = 0
while True:
    run.update_config({"i": i})
    i += 1
"""
    p = _signal_child(jdir, signum, code)
    assert p.returncode != 0
    kinds = [e.kind for e in events(jdir)]
    assert kinds[-1] == "status" and kinds.count("status") == 1
    assert statuses(jdir)[0]["status"] == "TERMINATED"
