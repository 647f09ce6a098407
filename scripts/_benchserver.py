"""A real ``plutosync serve`` for the benchmarks: started on a free port, its output drained.

    proc, url = start_server(data_dir, api_key, "--fault", "503,p=0.25,seed=1")
"""

from __future__ import annotations

import subprocess
import sys
import threading


def start_server(data_dir: str, api_key: str, *args: str) -> tuple[subprocess.Popen[str], str]:
    """The server's process and its base URL (``http://127.0.0.1:PORT``); ``args`` are more
    ``plutosync serve`` options. Exits the benchmark if the server does not start."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd", "serve", "--port", "0", "--data", data_dir,
         "--api-key", api_key, *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on http://" not in line:
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
    return proc, line.split("listening on ", 1)[1].split()[0]
