"""A job killed by the kernel's OOM killer, for real: its last line (the reason it died) reaches
both its stdout and the server (issue 10; W&B's users report it missing from their logs).

The job runs in a memory cgroup of its own (v1 ``memory.limit_in_bytes``, or v2 ``memory.max``)
and allocates until the kernel kills it. The OOM killer kills one process — the largest, the
job — so the capture helper, beside it in the cgroup, reads what is left in the pipes and
journals it. (A cgroup-wide kill, ``memory.oom.group``, takes the helper too: docs/console.md.)
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pluto.query as pq
import pytest

from tests.console import jobs
from tests.fixtures.daemon import DaemonProcess

LIMIT = 256 * 1024 * 1024


@pytest.fixture
def memory_cgroup() -> Iterator[Path]:
    """A fresh memory cgroup limited to ``LIMIT`` bytes, removed after the test."""
    v1 = Path("/sys/fs/cgroup/memory")
    v2 = Path("/sys/fs/cgroup")
    name = f"pluto-oom-{uuid.uuid4().hex[:8]}"
    try:
        if (v1 / "memory.limit_in_bytes").exists():
            group = v1 / name
            group.mkdir()
            (group / "memory.limit_in_bytes").write_text(str(LIMIT))
        elif "memory" in (v2 / "cgroup.controllers").read_text().split():
            group = v2 / name
            group.mkdir()
            (group / "memory.max").write_text(str(LIMIT))
            (group / "memory.swap.max").write_text("0")
        else:
            pytest.skip("no memory cgroup controller here")
    except OSError as exc:
        pytest.skip(f"cannot make a memory cgroup here (needs root): {exc}")
    try:
        yield group
    finally:
        try:
            group.rmdir()
        except OSError:
            pass


def test_the_line_before_an_oom_kill_reaches_stdout_and_the_server(tmp_path, memory_cgroup,
                                                                 pluto_server):
    procs = memory_cgroup / "cgroup.procs"
    proc = jobs.start(tmp_path / "j", """
        run = pluto.init(name="oom", run_id="oom1")
        for i in range(3):
            run.log({"loss": 1.0 / (i + 1)}, step=i)
            print(f"step {i}", flush=True)
        while os.environ["OOM_GROUP"] not in open("/proc/self/cgroup").read():
            time.sleep(0.01)  # never allocate outside the limited cgroup
        print("allocating the big batch", flush=True)
        hoard = []
        while True:
            hoard.append(bytearray(16 << 20))  # touched: counted against the cgroup
    """, OOM_GROUP=memory_cgroup.name)
    # a job started under the limit: the helper it starts lands in the same cgroup
    procs.write_text(str(proc.pid))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, err)
    assert out.endswith(b"step 2\nallocating the big batch\n"), out
    assert jobs.messages(tmp_path / "j", "oom1")[-1] == "allocating the big batch"

    d = DaemonProcess(pluto_server, tmp_path / "j", "--exit-when-idle")
    assert d.wait(60) == 0, d.log()
    client = pq.Client(api_token=pluto_server.api_key, host=pluto_server.url)
    try:
        logs = client.get_logs("proj", "PRO-1")
        run = client.get_run("proj", "PRO-1")
    finally:
        client.close()
    last = sorted(logs, key=lambda r: r["lineNumber"])[-1]["message"]
    assert last == "allocating the big batch"
    assert run["status"] == "FAILED"  # the dead writer reported
    assert os.path.exists(tmp_path / "j" / "journal.db")
