"""Run one chaos schedule for real: a server with faults, writer processes, daemons that are
SIGKILLed and restarted, pushes and exports, then a drain and the oracle.

Everything is a real process: ``plutosync serve`` (:class:`tests.fixtures.server.LocalServer`),
``plutosync run`` (with a short ``PLUTOSYNC_TIMEOUT`` so that stalls outlast it), ``plutosync
push`` and ``plutosync export``, and one ``trainer.py`` per writer. Usable outside pytest
(``scripts/chaos``).

A single-journal schedule has one journal (``<workdir>/journal``) and one daemon. A
multi-journal schedule (``Schedule.journals``) has a directory per journal under the work dir,
a daemon per ``live`` journal, and runs its pushes one after another once their journals' jobs
ended (a ``settle`` push first waits until everything delivered so far is drained); damaged
journals are made in push folders, exports taken while or after a job runs.

The processes are in :mod:`tests.chaos.procs`; exports, damaged journals, pushes and the
multi-journal drain in :mod:`tests.chaos.carriage` (a mixin of :class:`Runner`).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos import oracle
from tests.chaos.carriage import Carriage, clean
from tests.chaos.procs import DaemonProc, Job, WriterProc
from tests.chaos.schedule import Action, Damage, Export, Push, Schedule
from tests.fixtures.server import LocalServer

WRITER_PHASE_S = 90.0  # writers still alive after this are hung: killed and counted
DISPLAY_WAIT_S = 10.0  # a resume by display id waits this long for the daemon to create the run
TICK_S = 0.02
RESTART_AFTER_S = 1.0  # a daemon that exited by itself is started again after this


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
    multi: bool = False  # a multi-journal schedule

    @property
    def ok(self) -> bool:
        return self.counts.failures == 0


@dataclass
class Ctx:
    """What hooks (the oracle's self-tests) get to tamper with."""

    schedule: Schedule
    server: LocalServer
    journal_dir: Path  # the (first) journal
    reports: dict[str, list[dict]]
    journals: dict[str, Path] = field(default_factory=dict)  # every journal, by name
    daemons: dict[str, DaemonProc] = field(default_factory=dict)  # by journal name


def _display_id(journal_dir: Path, run_id: str) -> str | None:
    from pluto_offline import journal as J

    if not (journal_dir / "journal.db").exists():
        return None
    j = J.Journal.open(journal_dir, readonly=True)
    try:
        return next((r.display_id for r in J.all_runs(j) if r.run_id == run_id), None)
    finally:
        j.close()


class Runner(Carriage):
    def __init__(self, schedule: Schedule, workdir: Path,
                 before_drain: Callable[[Ctx], None] | None = None,
                 after_drain: Callable[[Ctx], None] | None = None,
                 drain_timeout: float = 60.0) -> None:
        self.s = schedule
        self.workdir = workdir
        if schedule.multi:
            self.jdirs = {j.name: workdir / j.dir for j in schedule.journals}
        else:
            self.jdirs = {"j0": workdir / "journal"}
        self.journal_dir = next(iter(self.jdirs.values()))
        self.before_drain, self.after_drain = before_drain, after_drain
        self.drain_timeout = drain_timeout
        self.events: dict[str, int] = {}
        self.notes: list[str] = list(schedule.notes)
        self.fired = 0
        self.writers = {w.name: WriterProc(w, workdir) for w in schedule.writers}
        self.delivery = oracle.Delivery()
        self.daemons: dict[str, DaemonProc] = {}
        self.offline: set[str] = set()  # live journals whose daemon has not started yet
        self.export_jobs: dict[str, Job] = {}
        self.exports_left: list[Export] = list(schedule.exports)
        self.damages_left: list[Damage] = list(schedule.damages)
        self.pushes_left: list[Push] = list(schedule.pushes)
        self.push_job: tuple[Push, Job, oracle.PushOutcome] | None = None
        self.settle_since: float | None = None
        self.settle_next = 0.0

    def _count(self, kind: str) -> None:
        self.events[kind] = self.events.get(kind, 0) + 1

    @property
    def daemon(self) -> DaemonProc:
        """The daemon of a single-journal schedule."""
        return self.daemons["j0"]

    def run(self) -> Result:
        t0 = time.monotonic()
        self.delivery.t0 = time.time()
        self.workdir.mkdir(parents=True, exist_ok=True)
        for d in self.jdirs.values():
            d.mkdir(parents=True, exist_ok=True)
        server = LocalServer(self.workdir / "server", reaper=self.s.reaper).start()
        base = {k: v for k, v in os.environ.items() if not k.startswith(("PLUTO_", "MLOP_"))}
        # the sampler's sys/ series would be points the oracle does not expect (it is tested
        # on its own: tests/sysmetrics); console capture stays on, as for users
        self.writer_env = {**base, "PLUTO_OFFLINE_AUTOSTART": "0",
                           "PLUTO_DISABLE_SYSTEM_METRICS": "1"}
        self.daemon_env = {**base, **server.env(), "PLUTOSYNC_TIMEOUT": str(self.s.client_timeout)}
        if self.s.multi:
            for j in self.s.journals:
                if j.delivery == "live":
                    self.daemons[j.name] = DaemonProc(self.jdirs[j.name], self.daemon_env,
                                                      self.workdir / f"daemon-{j.name}.log",
                                                      j.name)
                    if j.offline_at is not None:
                        self.offline.add(j.name)
        else:
            self.daemons["j0"] = DaemonProc(self.journal_dir, self.daemon_env,
                                            self.workdir / "daemon.log")
        self.server = server
        drain_s: float | None = None
        try:
            if self.s.multi:
                for name, d in self.daemons.items():
                    if name not in self.offline:
                        d.start()
            elif self.s.daemon_from_start:
                self.daemon.start()
            self._chaos(t0)
            ctx = Ctx(self.s, server, self.journal_dir, self._reports(), dict(self.jdirs),
                      self.daemons)
            if self.before_drain:
                self.before_drain(ctx)
            drain_s = self._drain_multi() if self.s.multi else self._drain()
            if self.after_drain:
                self.after_drain(ctx)
            backlog: Any = None
            self.delivery.drained = drain_s is not None
            if self.s.multi:  # read even when not drained: what is left, and why
                backlog = self._backlogs()
            elif drain_s is not None:
                backlog = oracle.journal_backlog(self.journal_dir)
            counts = oracle.check(self.s, self._reports(),
                                  {n: wp.launch for n, wp in self.writers.items()}, server,
                                  backlog, self.delivery)
        finally:
            for wp in self.writers.values():
                if wp.alive:
                    assert wp.proc is not None
                    wp.proc.kill()
            for job in self._jobs():
                job.kill()
            for d in self.daemons.values():
                d.stop()
            server.stop()
        undone = 0
        for d in self.daemons.values():
            text = d.log.read_text(errors="replace") if d.log.exists() else ""
            undone += text.count("had marked it FAILED")  # the daemon undid a reaper's FAILED
        if undone:
            self.events["reaper_undone"] = undone
        result = Result(self.s.seed, counts, round(time.monotonic() - t0, 2),
                        None if drain_s is None else round(drain_s, 2), self.fired,
                        self.events, self.notes, str(self.workdir), self.s.multi)
        (self.workdir / "result.json").write_text(json.dumps({  # for a kept work dir
            "seed": self.s.seed, "ok": result.ok, "counts": counts.as_dict(),
            "notes": self.notes, "events": self.events, "schedule": self.s.to_json()},
            indent=1, default=str))
        return result

    def _reports(self) -> dict[str, list[dict]]:
        return {n: wp.lines() for n, wp in self.writers.items()}

    def _jobs(self) -> list[Job]:
        jobs = list(self.export_jobs.values())
        if self.push_job is not None:
            jobs.append(self.push_job[1])
        return jobs

    # ------------------------------------------------------------------ the chaos phase
    def _chaos(self, t0: float) -> None:
        actions = list(self.s.actions)
        offline = self.s.offline_until
        while True:
            now = time.monotonic() - t0
            if offline and self.writers[offline].init_at is not None:
                self.daemon.start()
                offline = None
            for j in self.s.journals:
                if j.name in self.offline and j.offline_at is not None and now >= j.offline_at:
                    self.offline.discard(j.name)
                    self.daemons[j.name].start()
            while actions and actions[0].at <= now:
                self._act(actions.pop(0), offline is not None)
            for wp in self.writers.values():
                self._tend(wp, now, t0)
            self._watch_daemons()
            if self.s.multi:
                self._tend_exports()
                self._tend_damages()
                self._tend_pushes()
            done = all(wp.exited or (wp.proc is None and not self._launchable(wp))
                       for wp in self.writers.values())
            if done and not actions and self._deliveries_done():
                for wp in self.writers.values():  # one may have exited since its _tend above
                    wp.note_exit()
                return
            if now > WRITER_PHASE_S:
                for wp in self.writers.values():
                    if wp.alive:
                        assert wp.proc is not None
                        wp.proc.kill()
                        wp.proc.wait()
                        self.notes.append(f"{wp.w.name} hung: killed")
                    wp.note_exit()
                return
            time.sleep(TICK_S)

    def _deliveries_done(self) -> bool:
        return not (self.exports_left or self.export_jobs_running() or self.damages_left
                    or self.pushes_left or self.push_job is not None)

    def export_jobs_running(self) -> bool:
        return any(not job.done for job in self.export_jobs.values())

    def _act(self, a: Action, offline: bool) -> None:
        if a.kind == "fault":
            self.server.fault(**(a.fault or {}))
            self._count(f"fault:{(a.fault or {}).get('mode')}")
        elif a.kind == "daemon_kill":
            d = self.daemons.get(a.journal or "j0")
            if d is not None and d.running:
                d.kill()
                self._count("daemon_sigkill")
        elif a.kind == "daemon_start" and not offline:
            d = self.daemons.get(a.journal or "j0")
            if d is not None and (a.journal or "j0") not in self.offline:
                d.start()
        elif a.kind == "server_restart":
            self.fired += sum(r["fired"] for r in self.server.faults())
            self.server.restart()  # faults live in the server's memory: the restart clears them
            self._count("server_restart")

    def _watch_daemons(self) -> None:
        """Count a daemon that exited by itself, and start it again a moment later."""
        for d in self.daemons.values():
            if d.poll_exit():
                d.restart_at = time.monotonic() + RESTART_AFTER_S
            for why in d.unreported:
                self.delivery.daemon_exits.append(why)
                self._count("daemon_exit")
            d.unreported.clear()
            if d.restart_at is not None and time.monotonic() >= d.restart_at:
                d.start()

    def _launchable(self, wp: WriterProc) -> bool:
        """Whether ``wp`` (not started) can still start: what it waits for may yet happen."""
        w = wp.w
        if w.after is None:
            return True
        dep = self.writers[w.after]
        if dep.proc is None:
            return self._launchable(dep)
        # an eval attaches to a live run only, unless it attaches after the run's job
        return not (w.role == "eval" and not w.after_exit and dep.exited)

    def _tend(self, wp: WriterProc, now: float, t0: float) -> None:
        w = wp.w
        if wp.proc is None:
            if self._ready(wp):
                env = self.writer_env
                if w.env_run_id:
                    env = {**env, "PLUTO_RUN_ID": w.run_id}
                wp.start(self._spec(wp), env)
            return
        if wp.init_at is None and any(x["op"] == "init" for x in wp.lines()):
            wp.init_at = now
        if wp.exited:
            wp.note_exit()
            if wp.w.role == "eval":
                (self.workdir / f"{w.name}.closed").touch()
            return
        if w.signal_after is not None and wp.launch.signalled is None and wp.init_at is not None:
            lines = wp.lines()
            gate_ok = w.gate is None or self.writers[w.gate].init_at is not None \
                or self.writers[w.gate].exited
            if now - wp.init_at >= w.signal_after and gate_ok and \
                    any(x["op"] == "log" for x in lines):
                wp.launch.signalled_at = time.time()
                wp.proc.send_signal(signal.SIGTERM if w.end == "sigterm" else signal.SIGKILL)
                wp.launch.signalled = w.end
                self._count(w.end)

    def _ready(self, wp: WriterProc) -> bool:
        w = wp.w
        if w.after is None:
            return True
        dep = self.writers[w.after]
        if w.role == "eval" and not w.after_exit:
            return dep.init_at is not None and dep.alive
        if not dep.exited:
            return False
        if w.role == "alloc":  # continue the steps where the previous allocation stopped
            steps = [x["step"] for x in dep.lines() if x["op"] == "log"]
            first = dep.launch.first_step if dep.launch.first_step is not None \
                else dep.w.first_step
            wp.launch.first_step = steps[-1] + 1 if steps else first
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
        spec.update(dir=str(self.jdirs[w.journal] if self.s.multi else self.journal_dir),
                    project=w.project or self.s.project, name=w.name,
                    report=str(wp.report), run_ref=wp.launch.run_ref,
                    fork_step=wp.launch.fork_step,
                    gate_file=str(wp.gate_file) if wp.gate_file else None)
        if wp.launch.first_step is not None:
            spec["first_step"] = wp.launch.first_step
        return spec

    # ------------------------------------------------------------------ exports, damage, pushes
    def _journal_done(self, journal: str) -> bool:
        """Whether every job writing ``journal`` has ended (or never will start)."""
        return all(wp.exited or (wp.proc is None and not self._launchable(wp))
                   for wp in self.writers.values() if wp.w.journal == journal)

    # ------------------------------------------------------------------ the drain
    def _drain(self) -> float | None:
        """Faults off, daemon up, wait until nothing is pending; seconds taken, None if stuck."""
        if self.server.running:
            self.fired += sum(r["fired"] for r in self.server.faults())
            self.server.clear_faults()
        start = time.monotonic()
        self.daemon.hurry()
        self.daemon.start()
        while time.monotonic() - start < self.drain_timeout:
            backlog = oracle.journal_backlog(self.journal_dir)
            if clean(backlog):
                return time.monotonic() - start
            self._watch_daemons()
            time.sleep(0.1)
        return None

def run_schedule(schedule: Schedule, workdir: Path, **kwargs: Any) -> Result:
    return Runner(schedule, workdir, **kwargs).run()
