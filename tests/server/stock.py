"""Run the stock ``pluto`` client (pluto-ml) against a LocalServer, in a child process.

Each scenario is a small script: the stock client installs atexit hooks, signal handlers and
a sync subprocess, so it gets a process of its own, kept off the network except for the server
(telemetry off, keyring and staging dirs in a temp home).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from tests.fixtures.server import LocalServer

# Upload quickly: the stock sync process otherwise sends 100 records a second.
FAST_SETTINGS = {
    "sync_process_batch_size": 1000,
    "sync_process_flush_interval": 0.2,
    "disable_system_metrics": True,
    "x_file_stream_retry_max": 1,
}


def run_pluto(server: LocalServer, home: Path, script: str, *, api_key: str | None = None,
              expect_ok: bool = True, timeout: float = 120) -> tuple[dict[str, Any], str]:
    """Run ``script`` (``import pluto`` is done; ``SETTINGS`` is defined; print results with
    ``emit(dict)``); returns (what it emitted, its stderr)."""
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **server.env(), "PLUTO_DISABLE_TELEMETRY": "1", "HOME": str(home),
           "XDG_DATA_HOME": str(home / "data"), "PLUTO_DIR": str(home / "pluto")}
    if api_key is not None:
        env["PLUTO_API_KEY"] = api_key
    prelude = (
        "import json, pluto\n"
        f"SETTINGS = {FAST_SETTINGS!r}\n"
        "def emit(d): print('RESULT ' + json.dumps(d), flush=True)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(script)], env=env, cwd=home,
        capture_output=True, text=True, timeout=timeout,
    )
    if expect_ok and proc.returncode != 0:
        raise AssertionError(f"pluto script failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    results: dict[str, Any] = {}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            results.update(json.loads(line[len("RESULT "):]))
    results["returncode"] = proc.returncode
    return results, proc.stderr
