"""The processes a chaos schedule runs: daemons (``plutosync run``, killed and restarted at
will), writers (``trainer.py``, one per :class:`~tests.chaos.schedule.Writer`) and one-shot
commands (``plutosync push`` / ``export``), each with its output in a log file of the work dir.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.chaos import oracle
from tests.chaos.schedule import Writer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


class DaemonProc:
    """``plutosync run`` as a subprocess, killed and restarted at will.

    An exit the runner did not cause (it neither killed nor stopped the process) is reported
    once by :meth:`poll_exit` (into ``unreported``): a daemon must never exit on its own.
    """

    def __init__(self, journal_dir: Path, env: dict[str, str], log: Path,
                 name: str = "j0") -> None:
        self.journal_dir, self.env, self.log, self.name = journal_dir, env, log, name
        self.proc: subprocess.Popen[bytes] | None = None
        self.ours = False  # the runner signalled the current process
        self.noted = False
        self.offset = 0
        self.restart_at: float | None = None
        self.unreported: list[str] = []  # exits by itself, for the runner to collect

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.running:
            return
        self.poll_exit()  # a crash not seen yet is not forgotten by starting again
        self.offset = self.log.stat().st_size if self.log.exists() else 0
        self.ours = self.noted = False
        self.restart_at = None
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "syncd", "run", "--dir",
                 str(self.journal_dir), "--poll", "0.2"],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)

    def kill(self) -> None:
        if self.running:
            assert self.proc is not None
            self.ours = True
            self.proc.kill()
            self.proc.wait(10)

    def hurry(self) -> None:
        """Ask a running daemon to try every run now, its backoff skipped, as ``plutosync
        push`` beside it does (the server is healthy again: no need to wait out a minute)."""
        # only once it said it is delivering: its handler is in place (SIGUSR1's default
        # action would end it)
        said = self.log.exists() and f"plutosync[{self.proc.pid if self.proc else 0}]" in \
            self.log.read_text(errors="replace")[self.offset:]
        if self.running and said:
            assert self.proc is not None
            try:
                os.kill(self.proc.pid, signal.SIGUSR1)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        if self.running:
            assert self.proc is not None
            self.ours = True
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def poll_exit(self) -> bool:
        """Note how the current process ended, if it ended by itself (once per process)."""
        if self.proc is None or self.noted or self.proc.poll() is None:
            return False
        self.noted = True
        if self.ours:
            return False
        text = self.log.read_bytes()[self.offset:].decode(errors="replace") \
            if self.log.exists() else ""
        self.unreported.append(f"plutosync run of {self.name} exited {self.proc.returncode} "
                               f"by itself: {oracle.last_words(text)}")
        return True


class WriterProc:
    def __init__(self, w: Writer, workdir: Path) -> None:
        self.w = w
        self.report = workdir / f"{w.name}.report"
        self.spec_path = workdir / f"{w.name}.json"
        self.log = workdir / f"{w.name}.log"
        self.gate_file = workdir / f"{w.gate}.closed" if w.gate else None
        self.proc: subprocess.Popen[bytes] | None = None
        self.launch = oracle.Launch()
        self.init_at: float | None = None

    def lines(self) -> list[dict]:
        if not self.report.exists():
            return []
        text = self.report.read_text()
        # read while the writer runs: a line being written is read once it is whole
        whole = text[:text.rfind("\n") + 1]
        return [json.loads(x) for x in whole.splitlines() if x.strip()]

    def start(self, spec: dict[str, Any], env: dict[str, str]) -> None:
        self.spec_path.write_text(json.dumps(spec))
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, str(HERE / "trainer.py"),
                                          str(self.spec_path)], env=env, stdout=log,
                                         stderr=subprocess.STDOUT)
        self.launch.started = True

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def note_exit(self) -> None:
        if self.exited:
            assert self.proc is not None
            self.launch.exit_code = self.proc.returncode
            if self.launch.exited_at is None:
                self.launch.exited_at = time.time()


class Job:
    """A one-shot ``plutosync`` command (push, export) with its output in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self.started = time.monotonic()
        with open(log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "syncd", *args], env=env,
                                         stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)

    @property
    def done(self) -> bool:
        return self.proc.poll() is not None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
