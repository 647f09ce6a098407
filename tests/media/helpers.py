"""Jobs that log files, the daemon that delivers them, and the stock client that reads them."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path
from typing import Any

import pluto.query as pq

from pluto_offline import journal
from pluto_offline.journal import filerows
from tests.daemon.test_sdk_jobs import drain, finished, job  # noqa: F401 (re-exported)
from tests.fixtures.server import LocalServer

PROJECT = "proj"  # the project test_sdk_jobs.job gives every run


def stock_client(server: LocalServer) -> pq.Client:
    return pq.Client(api_token=server.api_key, host=server.url)


def server_id(journal_dir: Path, run_id: str) -> int:
    with journal.Journal.open(journal_dir) as j:
        row = journal.find_run(j, project=PROJECT, run_id=run_id)
        assert row is not None and row.server_id, f"{run_id} not created"
        return row.server_id


def downloaded(client: pq.Client, sid: int, log_name: str, dest: Path) -> list[bytes]:
    """The bytes of every file under ``log_name``, through the stock client's download URLs
    (``download_file`` itself takes the first; the rest are read from ``get_files``)."""
    files = client.get_files(PROJECT, sid, file_name=log_name)
    first = client.download_file(PROJECT, sid, log_name, dest)
    out = [first.read_bytes()]
    import httpx

    for f in files[1:]:
        out.append(httpx.get(f["url"], timeout=30).content)
    return out


def pixels(png: bytes) -> Any:
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)))


def file_rows(server: LocalServer, sid: int) -> int:
    """Rows the server's files table holds for a run (one per presign)."""
    return server.request("GET", "/_admin/stats", params={"runId": sid}).json()["files"]


def counts(journal_dir: Path) -> dict[int, filerows.FileCounts]:
    with journal.Journal.open(journal_dir) as j:
        return filerows.counts(j)


def run_job(journal_dir: Path, code: str, **env: str) -> str:
    """Run a job to its end; returns its output (asserts it exited 0)."""
    proc = job(journal_dir, code, **env)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out.decode(errors="replace")
    return out.decode(errors="replace")


def kill_after(proc: subprocess.Popen, marker: Path, timeout: float = 30) -> None:
    """SIGKILL ``proc`` once it has created ``marker``."""
    import time

    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[0].decode(errors="replace")
        assert time.monotonic() < deadline, "the job never reached its marker"
        time.sleep(0.01)
    proc.kill()
    proc.wait(10)
