"""Jobs in their own processes for the where-it-went and wait tests, with the local server's
environment when asked, and a gate file the test opens to let them finish."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from .conftest import REPO, child_env


def start_job(code: str, jdir: Path, **env: str) -> subprocess.Popen:
    """``code`` with ``pluto`` imported, ``D`` the journal dir and ``gate(name)`` waiting for the
    file ``D/../name`` (a test opens it with :func:`open_gate`)."""
    head = textwrap.dedent(f"""
        import pathlib, sys, time, pluto_offline as pluto
        D = {str(jdir)!r}
        def gate(name):
            while not (pathlib.Path(D).parent / name).exists():
                time.sleep(0.02)
    """)
    return subprocess.Popen([sys.executable, "-c", head + textwrap.dedent(code)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env(**env), cwd=REPO)


def open_gate(jdir: Path, name: str) -> None:
    (jdir.parent / name).touch()


def ended(proc: subprocess.Popen, timeout: float = 60) -> tuple[str, str]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return out, err


def status(jdir: Path, *args: str) -> subprocess.CompletedProcess:
    """``plutosync status --dir jdir`` as a user runs it (no server settings needed)."""
    return subprocess.run([sys.executable, "-m", "syncd", "status", "--dir", str(jdir), *args],
                          capture_output=True, text=True, timeout=60, env=child_env(), cwd=REPO)


def status_row(jdir: Path) -> dict | None:
    r = status(jdir, "--json")
    rows = json.loads(r.stdout) if r.returncode == 0 and r.stdout.strip() else []
    return rows[0] if rows else None


def line(stderr: str) -> str:
    """The job's end-of-run line (the last line starting ``pluto_offline: View run`` or
    ``pluto_offline: run``)."""
    lines = [ln for ln in stderr.splitlines()
             if ln.startswith(("pluto_offline: View run", "pluto_offline: run "))]
    assert lines, stderr
    return lines[-1]
