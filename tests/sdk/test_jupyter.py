"""A real Jupyter kernel (issue 11, item 5): ipykernel started and driven with jupyter_client
over its messaging protocol, as a notebook front end drives it.

A cell that raises, and a cell interrupted with the kernel's interrupt (SIGINT, as the
notebook's stop button sends it), leave the run open: later cells log on, and the status is
decided by ``finish()`` or by the kernel's shutdown (the stock SDK's behaviour).

ipykernel catches a cell's exception itself and sets its own SIGINT handler while a cell runs,
so here the outcome rests on those and on the SDK's exit path, not on its excepthook (which
test_interactive.py drives in ``python -i`` and IPython's terminal shell): these tests check
the outcome a notebook user sees, whichever part provides it.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import REPO, child_env, metric_lines, statuses

jupyter_client = pytest.importorskip("jupyter_client")
pytest.importorskip("ipykernel")

TIMEOUT = 60


class Kernel:
    """A started kernel and its blocking client; :meth:`cell` runs code as a notebook cell."""

    def __init__(self, manager, client) -> None:
        self.manager = manager
        self.client = client

    def cell(self, code: str, *, interrupt_after: str | None = None) -> dict:
        """Execute ``code``; return its reply's content plus ``stdout`` (what the cell printed)
        and ``error`` (the exception's name, if any). With ``interrupt_after``, the kernel is
        interrupted once the cell printed that text."""
        msg_id = self.client.execute(code)
        out, error, interrupted = "", None, False
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                msg = self.client.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"cell did not finish in {TIMEOUT}s: {code!r}, "
                                     f"printed {out!r}") from None
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out += content["text"]
                if interrupt_after and interrupt_after in out and not interrupted:
                    self.manager.interrupt_kernel()
                    interrupted = True
            elif kind == "error":
                error = content["ename"]
            elif kind == "status" and content["execution_state"] == "idle":
                break
        reply = self.client.get_shell_msg(timeout=TIMEOUT)
        while reply["parent_header"].get("msg_id") != msg_id:
            # a stale reply: wait_for_ready's kernel_info, asked again on a busy machine
            assert reply["msg_type"] == "kernel_info_reply", reply["msg_type"]
            reply = self.client.get_shell_msg(timeout=TIMEOUT)
        return {**reply["content"], "stdout": out, "error": error}


@pytest.fixture
def kernel(jdir: Path) -> Iterator[Kernel]:
    manager = jupyter_client.KernelManager(kernel_name="python3")
    manager.start_kernel(env=child_env(), cwd=str(REPO))
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=TIMEOUT)
        k = Kernel(manager, client)
        assert k.cell(f"import pluto_offline as pluto\nD = {str(jdir)!r}")["status"] == "ok"
        yield k
    finally:
        client.stop_channels()
        if manager.is_alive():
            manager.shutdown_kernel(now=True)


def xs(jdir: Path) -> list[float]:
    return [line["data"]["x"] for line in metric_lines(jdir)]


def test_failed_and_interrupted_cells_leave_the_run_open_until_finish(kernel, jdir):
    assert kernel.cell('run = pluto.init(dir=D, project="p", run_id="nb")\n'
                       'run.log({"x": 1.0})')["status"] == "ok"
    failed = kernel.cell("undefined_name")
    assert (failed["status"], failed["error"]) == ("error", "NameError")
    stopped = kernel.cell('import time\nprint("training", flush=True)\ntime.sleep(60)',
                          interrupt_after="training")
    assert (stopped["status"], stopped["error"]) == ("error", "KeyboardInterrupt")
    assert kernel.cell('run.log({"x": 2.0})\nrun.flush()')["status"] == "ok"
    assert statuses(jdir) == []  # neither cell ended the run
    assert kernel.cell("run.finish()")["status"] == "ok"
    assert xs(jdir) == [1.0, 2.0]
    assert statuses(jdir) == [{"status": "COMPLETED", "metadata": None}]


def test_a_kernel_shut_down_without_finish_completes_the_run(kernel, jdir):
    assert kernel.cell('run = pluto.init(dir=D, project="p", run_id="nb2")\n'
                       'run.log({"x": 1.0})')["status"] == "ok"
    assert kernel.cell("undefined_name")["error"] == "NameError"
    assert kernel.cell('run.log({"x": 2.0})')["status"] == "ok"
    kernel.manager.shutdown_kernel(now=False)  # the notebook's "shut down kernel"
    assert xs(jdir) == [1.0, 2.0]
    assert statuses(jdir) == [{"status": "COMPLETED", "metadata": None}]
