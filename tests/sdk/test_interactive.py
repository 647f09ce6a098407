"""Interactive sessions (issue 11, item 5): a real ``python -i`` and a real
``code.InteractiveConsole`` fed through stdin, a real SIGINT at the prompt.

An exception or an interrupt at the prompt does not end the run; ``finish()`` or the
interpreter's exit decides. (IPython is not installed here: its detection, ``get_ipython()``,
is the same code path as ``sys.ps1``'s.)
"""

from __future__ import annotations

import signal
import subprocess
import sys

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
