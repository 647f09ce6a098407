"""Helpers shared by the bad-input and security tests: the real CLI, and real child processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from pluto_offline import journal
from syncd.client import PlutoClient
from syncd.replayer import Replayer
from syncd.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any PLUTO_/MLOP_ settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLUTO_", "MLOP_"))}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["COLUMNS"] = "400"  # rich must not fold a path in the middle of a message
    env.update(extra)
    return env


def cli(*args: str, env: dict[str, str] | None = None,
        timeout: float = 90) -> subprocess.CompletedProcess:
    """``python -m syncd ARGS`` as an operator would run it."""
    return subprocess.run([sys.executable, "-m", "syncd", *args], capture_output=True, text=True,
                          env=env or clean_env(), cwd=ROOT, timeout=timeout)


def child(code: str, *args: str, env: dict[str, str] | None = None,
          timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter; ``sys.argv[1:]`` = ``args``."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                          capture_output=True, text=True, env=env or clean_env(), cwd=ROOT,
                          timeout=timeout)


def status_rows(*dirs: Path, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """``plutosync status --json`` over ``dirs``; asserts it succeeded."""
    args = [a for d in dirs for a in ("--dir", str(d))]
    res = cli("status", *args, "--json", env=env)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def replayer_at(path: str | os.PathLike[str], url: str, api_key: str,
                timeout: float = 5.0) -> Replayer:
    """An in-process replayer on its own journal connection, delivering to ``url``."""
    settings = Settings.from_env(server=url, env={"PLUTO_API_KEY": api_key}, timeout=timeout)
    return Replayer(journal.Journal.open(path), PlutoClient(settings))


def integrity(path: Path) -> str:
    """SQLite's own verdict on a journal file (``ok`` when sound)."""
    j = journal.Journal.open(path, readonly=True)
    try:
        return j.conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        j.close()
