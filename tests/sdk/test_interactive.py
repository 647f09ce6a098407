"""Interactive sessions (issue 11, item 5): a real ``python -i`` and a real
``code.InteractiveConsole`` fed through stdin, a real SIGINT at the prompt.

An exception or an interrupt at the prompt does not end the run; ``finish()`` or the
interpreter's exit decides. IPython (what Jupyter kernels run) is driven the same way, through
its terminal shell's stdin (the test extra installs it).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO, child_env, metric_lines, shell_signals, statuses

NOTE = "interactive session: a NameError does not end the open run(s) r"


def _interactive(jdir, code: str, stdin: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-q", "-i", "-c", code, str(jdir)], input=stdin,
                          capture_output=True, text=True, timeout=60, env=child_env(), cwd=REPO)


def test_an_exception_in_python_i_leaves_the_run_open_until_finish(jdir):
    # the script given to python -i fails; at its prompt the user logs on, errs, and finishes
    r = _interactive(jdir, """
import sys, pluto_offline as pluto
run = pluto.init(dir=sys.argv[1], project="p", run_id="r")
run.log({"x": 1.0})
undefined_name
""", "run.log({'x': 2.0})\nanother_undefined_name\nrun.log({'x': 3.0})\nrun.finish(code=3)\n")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("NameError: name") == 2
    assert r.stderr.count(NOTE) == 1  # said once, at the first exception
    assert [line["data"]["x"] for line in metric_lines(jdir)] == [1.0, 2.0, 3.0]
    assert statuses(jdir) == [{"status": "FAILED", "metadata": {"exit_code": 3}}]


def test_ctrl_c_at_the_prompt_leaves_the_run_open_and_exit_completes_it(jdir):
    p = subprocess.Popen([sys.executable, "-q", "-i"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=child_env(), cwd=REPO, preexec_fn=shell_signals)
    p.stdin.write(f"import time, pluto_offline as pluto\n"
                  f"run = pluto.init(dir={str(jdir)!r}, project='p', run_id='r')\n"
                  "run.log({'x': 1.0})\n"
                  "print('ready', flush=True); time.sleep(60)\n")
    p.stdin.flush()
    assert p.stdout.readline().strip() == "ready"
    p.send_signal(signal.SIGINT)  # interrupts the sleep, as Ctrl-C interrupts a cell
    out, err = p.communicate("run.log({'x': 2.0})\nprint('after', flush=True)\n", timeout=60)
    assert p.returncode == 0, err
    assert "KeyboardInterrupt" in err and "after" in out
    assert [line["data"]["x"] for line in metric_lines(jdir)] == [1.0, 2.0]
    assert statuses(jdir) == [{"status": "COMPLETED", "metadata": None}]  # at exit


def test_an_interactive_console_keeps_the_run_through_errors_and_interrupts(jdir):
    # code.InteractiveConsole: what IDE consoles and embedded shells run
    code = """
import code, sys, pluto_offline as pluto
run = pluto.init(dir=sys.argv[1], project="p", run_id="r")
code.interact(local={"run": run}, banner="", exitmsg="")
"""
    r = subprocess.run([sys.executable, "-c", code, str(jdir)], capture_output=True, text=True,
                       timeout=60, env=child_env(), cwd=REPO,
                       input="run.log({'x': 1.0})\n1 / 0\nraise KeyboardInterrupt\n"
                             "run.log({'x': 2.0})\n")
    assert r.returncode == 0, r.stderr
    assert "ZeroDivisionError" in r.stderr and "KeyboardInterrupt" in r.stderr
    assert [line["data"]["x"] for line in metric_lines(jdir)] == [1.0, 2.0]
    assert statuses(jdir) == [{"status": "COMPLETED", "metadata": None}]


def _ipython(jdir: Path, cells: str) -> subprocess.Popen:
    pytest.importorskip("IPython", reason="the test extra installs IPython")
    ipython = Path(sys.executable).parent / "ipython"
    p = subprocess.Popen([str(ipython), "--simple-prompt", "--no-banner", "--quick",
                          "--colors=nocolor", "--HistoryManager.enabled=False"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, env=child_env(), cwd=REPO, preexec_fn=shell_signals)
    p.stdin.write(f"import time, pluto_offline as pluto\n"
                  f"run = pluto.init(dir={str(jdir)!r}, project='p', run_id='r')\n" + cells)
    p.stdin.flush()
    return p


def test_ipython_cells_that_fail_or_are_interrupted_leave_the_run_open(jdir):
    p = _ipython(jdir, "run.log({'x': 1.0})\nundefined_name\nraise KeyboardInterrupt\n"
                       "run.log({'x': 2.0})\nprint('ready', flush=True); time.sleep(60)\n")
    seen = ""
    while "ready" not in (line := p.stdout.readline()):
        assert line, f"IPython ended before the sleeping cell: {seen}"
        seen += line
    p.send_signal(signal.SIGINT)  # Ctrl-C (Jupyter's "interrupt the kernel") in a cell
    out, _ = p.communicate("run.log({'x': 3.0})\nexit\n", timeout=60)
    out = seen + out
    assert p.returncode == 0, out
    assert "NameError" in out and out.count("KeyboardInterrupt") >= 2
    assert [line["data"]["x"] for line in metric_lines(jdir)] == [1.0, 2.0, 3.0]
    assert statuses(jdir) == [{"status": "COMPLETED", "metadata": None}]  # at exit
