"""SDK test helpers: real journals in tmp dirs, real child processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import pluto_offline
from pluto_offline import journal

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def jdir(tmp_path: Path) -> Path:
    return tmp_path / "journal"


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch):
    for var in ("PLUTO_PROJECT", "PLUTO_DIR", "PLUTO_RUN_ID", "PLUTO_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    yield
    for run in list(pluto_offline.ops):  # a failing test must not leak open runs
        run.close()


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLUTO_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def shell_signals() -> None:
    """``preexec_fn`` for a job that is signalled: start it as a shell would, with no signal
    blocked or ignored, whatever the test process (a pytest worker) inherited or set."""
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def script(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def run_child(code: str, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (``sys.argv[1:]`` = ``args``)."""
    return subprocess.run(script(code) + list(args), capture_output=True, text=True,
                          timeout=timeout, env=child_env(**env), cwd=REPO)


def events(jdir: Path, kind: str | None = None, recover: bool = True) -> list[journal.Event]:
    j = journal.Journal.open(jdir)
    try:
        if recover:
            journal.recover(j)
        sql = "SELECT seq, run, kind, time, step, payload FROM events"
        args: tuple = ()
        if kind:
            sql += " WHERE kind = ?"
            args = (kind,)
        return [journal.Event(*r) for r in j.conn.execute(sql + " ORDER BY seq", args)]
    finally:
        j.close()


def metric_lines(jdir: Path, run: int | None = None) -> list[dict]:
    """Every line of the ``metrics`` events as plutosync sends it, in journal order."""
    out = []
    for e in events(jdir, "metrics"):
        if run is None or e.run == run:
            out += [json.loads(line) for line in journal.metrics_ndjson(e.payload).split("\n")]
    return out


def statuses(jdir: Path) -> list[dict]:
    return [e.data() for e in events(jdir, "status")]
