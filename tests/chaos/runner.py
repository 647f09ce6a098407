"""Run one chaos schedule for real: a server with faults, writer processes, a daemon that is
SIGKILLed and restarted, then a drain and the oracle.

Everything is a real process: ``plutosync serve`` (:class:`tests.fixtures.server.LocalServer`),
``plutosync run`` (with a short ``PLUTOSYNC_TIMEOUT`` so that stalls outlast it), and one
``trainer.py`` per writer. Usable outside pytest (``scripts/chaos``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos import oracle
from tests.chaos.schedule import Action, Schedule, Writer
from tests.fixtures.server import LocalServer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WRITER_PHASE_S = 90.0  # writers still alive after this are hung: killed and counted
DISPLAY_WAIT_S = 10.0  # a resume by display id waits this long for the daemon to create the run
TICK_S = 0.02


@dataclass
class Result:
    seed: int
    counts: oracle.Counts
    seconds: float
    drain_seconds: float | None
    faults_fired: int = 0
    events: dict[str, int] = field(default_factory=dict)  # what the chaos did, by kind
    notes: list[str] = field(default_factory=list)
    workdir: str = ""

    @property
    def ok(self) -> bool:
        return self.counts.failures == 0


@dataclass
class Ctx:
    """What hooks (the oracle's self-tests) get to tamper with."""

    schedule: Schedule
    server: LocalServer
    journal_dir: Path
    reports: dict[str, list[dict]]


class DaemonProc:
    """``plutosync run`` as a subprocess, killed and restarted at will."""

    def __init__(self, journal_dir: Path, env: dict[str, str], log: Path) -> None:
        self.journal_dir, self.env, self.log = journal_dir, env, log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.running:
            return
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "syncd", "run", "--dir",
                 str(self.journal_dir), "--poll", "0.2"],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)

    def kill(self) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


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
        return [json.loads(x) for x in self.report.read_text().splitlines() if x.strip()]

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


def _display_id(journal_dir: Path, run_id: str) -> str | None:
    from pluto_offline import journal as J

    if not (journal_dir / "journal.db").exists():
        return None
    j = J.Journal.open(journal_dir, readonly=True)
    try:
        return next((r.display_id for r in J.all_runs(j) if r.run_id == run_id), None)
    finally:
        j.close()


class Runner:
    def __init__(self, schedule: Schedule, workdir: Path,
                 before_drain: Callable[[Ctx], None] | None = None,
                 after_drain: Callable[[Ctx], None] | None = None,
                 drain_timeout: float = 60.0) -> None:
        self.s = schedule
        self.workdir = workdir
        self.journal_dir = workdir / "journal"
        self.before_drain, self.after_drain = before_drain, after_drain
        self.drain_timeout = drain_timeout
        self.events: dict[str, int] = {}
        self.notes: list[str] = list(schedule.notes)
        self.fired = 0
        self.writers = {w.name: WriterProc(w, workdir) for w in schedule.writers}

    def _count(self, kind: str) -> None:
        self.events[kind] = self.events.get(kind, 0) + 1

    def run(self) -> Result:
        t0 = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.journal_dir.mkdir(exist_ok=True)
        server = LocalServer(self.workdir / "server", reaper=self.s.reaper).start()
        base = {k: v for k, v in os.environ.items() if not k.startswith(("PLUTO_", "MLOP_"))}
        self.writer_env = {**base, "PLUTO_OFFLINE_AUTOSTART": "0"}
        daemon_env = {**base, **server.env(), "PLUTOSYNC_TIMEOUT": str(self.s.client_timeout)}
        daemon = DaemonProc(self.journal_dir, daemon_env, self.workdir / "daemon.log")
        self.server, self.daemon = server, daemon
        drain_s: float | None = None
        try:
            if self.s.daemon_from_start:
                daemon.start()
            self._chaos(t0)
            ctx = Ctx(self.s, server, self.journal_dir, self._reports())
            if self.before_drain:
                self.before_drain(ctx)
            drain_s = self._drain()
            if self.after_drain:
                self.after_drain(ctx)
            backlog = oracle.journal_backlog(self.journal_dir) if drain_s is not None else None
            counts = oracle.check(self.s, self._reports(),
                                  {n: wp.launch for n, wp in self.writers.items()}, server,
                                  backlog)
        finally:
            for wp in self.writers.values():
                if wp.alive:
                    assert wp.proc is not None
                    wp.proc.kill()
            daemon.stop()
            server.stop()
        log = (self.workdir / "daemon.log")
        text = log.read_text(errors="replace") if log.exists() else ""
        if text.count("had marked it FAILED"):  # the daemon undid a reaper's FAILED
            self.events["reaper_undone"] = text.count("had marked it FAILED")
        return Result(self.s.seed, counts, round(time.monotonic() - t0, 2),
                      None if drain_s is None else round(drain_s, 2), self.fired,
                      self.events, self.notes, str(self.workdir))

    def _reports(self) -> dict[str, list[dict]]:
        return {n: wp.lines() for n, wp in self.writers.items()}

    # ------------------------------------------------------------------ the chaos phase
    def _chaos(self, t0: float) -> None:
        actions = list(self.s.actions)
        offline = self.s.offline_until
        while True:
            now = time.monotonic() - t0
            if offline and self.writers[offline].init_at is not None:
                self.daemon.start()
                offline = None
            while actions and actions[0].at <= now:
                self._act(actions.pop(0), offline is not None)
            for wp in self.writers.values():
                self._tend(wp, now, t0)
            done = all(wp.exited or (wp.proc is None and not self._launchable(wp))
                       for wp in self.writers.values())
            if done and not actions:
                for wp in self.writers.values():  # one may have exited since its _tend above
                    if wp.exited:
                        wp.launch.exit_code = wp.proc.returncode  # type: ignore[union-attr]
                return
            if now > WRITER_PHASE_S:
                for wp in self.writers.values():
                    if wp.alive:
                        assert wp.proc is not None
                        wp.proc.kill()
                        wp.proc.wait()
                        self.notes.append(f"{wp.w.name} hung: killed")
                return
            time.sleep(TICK_S)

    def _act(self, a: Action, offline: bool) -> None:
        if a.kind == "fault":
            self.server.fault(**(a.fault or {}))
            self._count(f"fault:{(a.fault or {}).get('mode')}")
        elif a.kind == "daemon_kill":
            if self.daemon.running:
                self.daemon.kill()
                self._count("daemon_sigkill")
        elif a.kind == "daemon_start" and not offline:
            self.daemon.start()
        elif a.kind == "server_restart":
            self.fired += sum(r["fired"] for r in self.server.faults())
            self.server.restart()  # faults live in the server's memory: the restart clears them
            self._count("server_restart")

    def _launchable(self, wp: WriterProc) -> bool:
        """Whether ``wp`` (not started) can still start: what it waits for may yet happen."""
        w = wp.w
        if w.after is None:
            return True
        dep = self.writers[w.after]
        if dep.proc is None:
            return self._launchable(dep)
        return not (w.role == "eval" and dep.exited)  # an eval attaches to a live run only

    def _tend(self, wp: WriterProc, now: float, t0: float) -> None:
        w = wp.w
        if wp.proc is None:
            if self._ready(wp):
                wp.start(self._spec(wp), self.writer_env)
            return
        if wp.init_at is None and any(x["op"] == "init" for x in wp.lines()):
            wp.init_at = now
        if wp.exited:
            wp.launch.exit_code = wp.proc.returncode
            if wp.w.role == "eval":
                (self.workdir / f"{w.name}.closed").touch()
            return
        if w.signal_after is not None and wp.launch.signalled is None and wp.init_at is not None:
            lines = wp.lines()
            gate_ok = w.gate is None or self.writers[w.gate].init_at is not None \
                or self.writers[w.gate].exited
            if now - wp.init_at >= w.signal_after and gate_ok and \
                    any(x["op"] == "log" for x in lines):
                wp.proc.send_signal(signal.SIGTERM if w.end == "sigterm" else signal.SIGKILL)
                wp.launch.signalled = w.end
                self._count(w.end)

    def _ready(self, wp: WriterProc) -> bool:
        w = wp.w
        if w.after is None:
            return True
        dep = self.writers[w.after]
        if w.role == "eval":
            return dep.init_at is not None and dep.alive
        if not dep.exited:
            return False
        if w.role == "fork":
            steps = [x["step"] for x in dep.lines() if x["op"] == "log"]
            wp.launch.fork_step = steps[int(w.fork_frac * (len(steps) - 1))] if steps else 0
        if w.role == "resume":
            wp.launch.run_ref = w.run_id
            if w.by_display:
                shown = _display_id(self.journal_dir, w.run_id)
                if shown is None and time.monotonic() - self._since(wp) < DISPLAY_WAIT_S:
                    return False
                if shown is None:
                    self.notes.append(f"{w.name}: no display id in {DISPLAY_WAIT_S:.0f} s, "
                                      "resumed by run_id")
                wp.launch.run_ref = shown or w.run_id
        return True

    def _since(self, wp: WriterProc) -> float:
        if not hasattr(wp, "waiting_since"):
            wp.waiting_since = time.monotonic()  # type: ignore[attr-defined]
        return wp.waiting_since  # type: ignore[attr-defined]

    def _spec(self, wp: WriterProc) -> dict[str, Any]:
        w = wp.w
        spec = self.s.to_json()["writers"][list(self.writers).index(w.name)]
        spec.update(dir=str(self.journal_dir), project=self.s.project, name=w.name,
                    report=str(wp.report), run_ref=wp.launch.run_ref,
                    fork_step=wp.launch.fork_step,
                    gate_file=str(wp.gate_file) if wp.gate_file else None)
        return spec

    # ------------------------------------------------------------------ the drain
    def _drain(self) -> float | None:
        """Faults off, daemon up, wait until nothing is pending; seconds taken, None if stuck."""
        if self.server.running:
            self.fired += sum(r["fired"] for r in self.server.faults())
            self.server.clear_faults()
        start = time.monotonic()
        self.daemon.start()
        while time.monotonic() - start < self.drain_timeout:
            backlog = oracle.journal_backlog(self.journal_dir)
            if not (backlog["pending"] or backlog["reasserts"] or backlog["spills"]):
                return time.monotonic() - start
            if not self.daemon.running:  # it died on its own: say so, and go on
                self.notes.append(f"daemon exited {self.daemon.proc and self.daemon.proc.returncode}")
                self.daemon.start()
            time.sleep(0.1)
        return None


def run_schedule(schedule: Schedule, workdir: Path, **kwargs: Any) -> Result:
    return Runner(schedule, workdir, **kwargs).run()
