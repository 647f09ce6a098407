"""Helpers for the operator-command tests: real journals, the real CLI in a subprocess."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pluto_offline import journal as J

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """``python -m syncd ARGS`` as an operator would run it."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("PLUTO_", "MLOP_"))}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "syncd", *args], capture_output=True, text=True, env=full_env,
        cwd=ROOT, timeout=timeout,
    )


def status_json(*dirs: Path, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    args = [a for d in dirs for a in ("--dir", str(d))]
    res = cli("status", *args, "--json", env=env)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def by_run_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["run_id"]: r for r in rows}


class Builder:
    """Writes a journal the way the SDK and the daemon do, through the journal functions."""

    def __init__(self, path: Path):
        self.j = J.Journal.open(path)
        self._locks: list[int] = []

    def run(self, run_id: str, *, project: str = "proj", metrics: int = 3, end: str | None = None,
            writer: bool = True, old_ms: int = 0) -> int:
        """A run with a create, ``metrics`` metrics events and, if ``end``, its final event.

        ``end``: COMPLETED/FAILED/TERMINATED (a status event), ``closed``, or None (the writer
        never ended: killed, or live when :meth:`hold` is called). ``old_ms`` backdates events.
        """
        t = J.now_ms() - old_ms
        with self.j.transaction():
            key = J.add_run(self.j, project=project, run_id=run_id, name=f"n-{run_id}")
            J.append_event(self.j, key, "create", payload={"config": {}}, time=t)
            for step in range(metrics):
                J.append_event(self.j, key, "metrics", step=step, time=t, raw=True,
                               payload=json.dumps({"time": t, "step": step, "data": {"x": step}}))
            if writer:
                J.add_writer(self.j, key, f"w-{run_id}", os.getpid(), "host")
            if end in J.TERMINAL_STATUSES:
                J.append_event(self.j, key, "status", payload={"status": end}, time=t)
            elif end == "closed":
                J.append_event(self.j, key, "close", payload={}, time=t)
            if end and writer:
                J.end_writer(self.j, f"w-{run_id}", end)
        return key

    def hold(self, run_id: str) -> None:
        """Make the run's writer live: hold the lock on its spill file, as a live SDK does."""
        spill = self.j.spill_dir
        spill.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(spill / f"w-{run_id}.spill", os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._locks.append(fd)

    def ack_all(self, key: int, **server: Any) -> None:
        last = self.j.conn.execute("SELECT max(seq) FROM events WHERE run = ?", (key,)).fetchone()[0]
        J.ack(self.j, key, last, **server)

    def release(self) -> None:
        for fd in self._locks:
            os.close(fd)
        self._locks.clear()

    def close(self) -> None:
        self.release()
        self.j.close()


@pytest.fixture
def builder(tmp_path: Path) -> Iterator[Builder]:
    b = Builder(tmp_path / "journal")
    yield b
    b.close()


def _sdk_ready() -> bool:
    import pluto_offline

    return hasattr(pluto_offline, "init")


# Tests that drive the real SDK wait for it to land (pluto_offline.init).
needs_sdk = pytest.mark.skipif(not _sdk_ready(), reason="pluto_offline.init is not built yet")


def run_inproc(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The CLI in this process (error paths: fast); returns (exit code, stdout, stderr)."""
    from syncd.cli import main

    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err
