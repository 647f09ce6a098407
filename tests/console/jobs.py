"""Real jobs for console tests: a Python process with the SDK, its output read back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from pluto_offline import journal

PREAMBLE = "import os, sys, time, signal, subprocess, logging\nimport pluto_offline as pluto\n"


def job_env(journal_dir: Path, **env: str) -> dict[str, str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("PLUTO_", "MLOP_"))}
    full.update({"PLUTO_DIR": str(journal_dir), "PLUTO_PROJECT": "proj",
                 "PLUTO_OFFLINE_AUTOSTART": "0", **env})
    return full


def start(journal_dir: Path, code: str, *, stdout: int | None = subprocess.PIPE,
          stderr: int | None = subprocess.PIPE, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", PREAMBLE + textwrap.dedent(code)],
                            env=job_env(journal_dir, **env), stdout=stdout, stderr=stderr)


def run(journal_dir: Path, code: str, timeout: float = 30, **env: str) -> tuple[int, bytes, bytes]:
    """Run a job to its end; (exit code, stdout, stderr), each read to EOF: the helper, which
    holds the job's original stdout/stderr, has exited too (its last commit is done)."""
    proc = start(journal_dir, code, **env)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def journaled(journal_dir: Path, run_id: str) -> list[dict]:
    """The console lines journaled for a run, in order."""
    with journal.Journal.open(journal_dir, readonly=True) as j:
        row = journal.find_run(j, project="proj", run_id=run_id)
        assert row is not None
        payloads = [p for (p,) in j.conn.execute(
            "SELECT payload FROM events WHERE run = ? AND kind = 'logs' ORDER BY seq", (row.key,))]
    return [json.loads(line) for p in payloads for line in p.split("\n")]


def messages(journal_dir: Path, run_id: str, log_type: str | None = None) -> list[str]:
    return [r["message"] for r in journaled(journal_dir, run_id)
            if log_type is None or r["logType"] == log_type]
