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
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos import oracle
from tests.chaos.schedule import Action, Damage, Export, Push, Schedule, Writer
from tests.fixtures.server import LocalServer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WRITER_PHASE_S = 90.0  # writers still alive after this are hung: killed and counted
DISPLAY_WAIT_S = 10.0  # a resume by display id waits this long for the daemon to create the run
TICK_S = 0.02
PUSH_TIMEOUT = oracle.PUSH_TIMEOUT  # plutosync push --timeout
PUSH_HUNG_S = 100.0  # a push still running after this is hung: killed and counted
SETTLE_MAX_S = 15.0  # a "days apart" push waits at most this for earlier deliveries to drain
RESTART_AFTER_S = 1.0  # a daemon that exited by itself is started again after this
WIDE = {"COLUMNS": "250"}  # push's table and messages unwrapped, so names can be found in them


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


def _display_id(journal_dir: Path, run_id: str) -> str | None:
    from pluto_offline import journal as J

    if not (journal_dir / "journal.db").exists():
        return None
    j = J.Journal.open(journal_dir, readonly=True)
    try:
        return next((r.display_id for r in J.all_runs(j) if r.run_id == run_id), None)
    finally:
        j.close()


def _clean(backlog: dict[str, Any]) -> bool:
    return not (backlog["pending"] or backlog["reasserts"] or backlog["spills"]
                or backlog.get("files_pending") or backlog.get("incoming"))


class Runner:
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

    def _tend_exports(self) -> None:
        for x in list(self.exports_left):
            wp = self.writers[x.writer]
            logged = sum(1 for line in wp.lines() if line["op"] == "log")
            if x.during and not (wp.alive and logged >= max(1, wp.w.steps // 3)) \
                    and not wp.exited:
                continue
            if not x.during and not self._journal_done(x.journal):
                continue
            out = self.workdir / x.out
            out.parent.mkdir(parents=True, exist_ok=True)
            self.exports_left.remove(x)
            self.delivery.exports[x.name] = oracle.ExportOutcome(
                x.name, x.journal, while_running=wp.alive)
            if x.during and not wp.alive:
                self.notes.append(f"{x.name}: {x.writer} ended before the export was taken")
            self.export_jobs[x.name] = Job(
                ["export", "--dir", str(self.jdirs[x.journal]), "--out", str(out), "--force"],
                {**self.daemon_env, **WIDE}, self.workdir / f"export-{x.name}.log")
            self._count("export")
        for name, job in self.export_jobs.items():
            outcome = self.delivery.exports[name]
            if job.done and outcome.returncode is None:
                outcome.returncode = job.proc.returncode
                outcome.output = job.output()

    def _tend_damages(self) -> None:
        for d in list(self.damages_left):
            if d.decoy is not None and not self.writers[d.decoy].exited:
                continue
            self.damages_left.remove(d)
            try:
                self._make_damaged(d)
                self._count(f"damaged:{d.kind}")
            except (OSError, sqlite3.Error) as exc:  # the runner's, not the product's
                self.notes.append(f"{d.name}: could not be made ({exc})")

    def _make_damaged(self, d: Damage) -> None:
        path = self.workdir / d.path
        path.parent.mkdir(parents=True, exist_ok=True)
        if d.kind == "empty":
            path.write_bytes(b"")
            return
        assert d.decoy is not None
        src = self.jdirs[self.s.writer(d.decoy).journal] / "journal.db"
        with closing(sqlite3.connect(src)) as a, closing(sqlite3.connect(path)) as b:
            a.backup(b)
        with closing(sqlite3.connect(path, isolation_level=None)) as c:
            c.execute("PRAGMA journal_mode=DELETE")  # the file alone is the whole journal
            page = c.execute("PRAGMA page_size").fetchone()[0]
            root = c.execute("SELECT rootpage FROM sqlite_master WHERE name='events'"
                             ).fetchone()[0]
        raw = bytearray(path.read_bytes())
        rng = random.Random(d.seed)
        if d.kind == "header":
            raw[:100] = rng.randbytes(100)
        else:  # random bytes over the events table's root page, which no reader can skip
            off = (root - 1) * page
            raw[off:off + page] = rng.randbytes(page)
            raw[off] = 0  # not a b-tree page type, whatever the draw
        path.write_bytes(bytes(raw))

    def _item_path(self, item: str) -> Path:
        x = next((x for x in self.s.exports if x.name == item), None)
        return self.workdir / x.out if x is not None else self.jdirs[item]

    def _item_ready(self, item: str) -> bool:
        if item in self.jdirs:
            return self._journal_done(item)
        outcome = self.delivery.exports.get(item)
        return outcome is not None and outcome.returncode is not None

    def _delivered_so_far(self) -> list[str]:
        """Journals (and copies) whose delivery started and whose jobs have all ended, less
        those that only attach to a run whose creating journal is not delivered yet (a
        daemon may rightly hold them until the run exists)."""
        started = [j.name for j in self.s.journals
                   if j.delivery == "live" and j.name not in self.offline]
        for o in self.delivery.pushes:
            started += [i for i in o.items if i not in started]
        return [i for i in started if (i not in self.jdirs or self._journal_done(i))
                and not self._waits_for_creator(i, started)]

    def _waits_for_creator(self, journal: str, started: list[str]) -> bool:
        ws = [w for w in self.s.writers if w.journal == journal and w.run_id == self.s.shared]
        if not ws or not all(w.attaches for w in ws):
            return False
        creators = {w.journal for w in self.s.writers
                    if w.run_id == self.s.shared and not w.attaches}
        if not creators:
            return False
        if not creators & set(started):
            return True
        # a creator's delivery has started but may not have created the run yet (its daemon
        # offline, killed, backing off): the push cannot know whether it ever will, so it
        # may stop and say it waits for that journal (the drain delivers the rest later)
        copies = {x.name for x in self.s.exports if x.journal in creators}
        return not any(self._knows_server_run(i) for i in creators | copies)

    def _knows_server_run(self, item: str) -> bool:
        """Whether journal (or copy) ``item`` has recorded the shared run's server id."""
        path = self._item_path(item)
        if not (path / "journal.db").exists() and not path.is_file():
            return False
        from pluto_offline import journal as J
        try:
            with J.Journal.open(path, readonly=True) as j:
                return any(r.run_id == self.s.shared and r.server_id is not None
                           for r in J.all_runs(j))
        except Exception:  # noqa: BLE001 — being written or damaged: not known
            return False

    def _backlog_of(self, item: str) -> dict[str, Any] | None:
        path = self._item_path(item)
        if not (path / "journal.db").exists() and not path.is_file():
            return None
        try:
            return oracle.journal_backlog(path)
        except Exception as exc:  # noqa: BLE001 — a copy that cannot be read: say so
            self.notes.append(f"{item}: backlog unreadable ({exc})")
            return None

    def _copies_beside_daemons(self, items: tuple[str, ...]) -> set[str]:
        """The journals copied in ``items`` whose own daemon is running now."""
        originals = {x.journal for x in self.s.exports if x.name in items}
        return {j for j in originals if (d := self.daemons.get(j)) is not None and d.running}

    def _tend_pushes(self) -> None:
        if self.push_job is not None:
            p, job, outcome = self.push_job
            outcome.concurrent |= self._copies_beside_daemons(p.items)
            hung = not job.done and time.monotonic() - job.started > PUSH_HUNG_S
            if hung:
                job.kill()
                outcome.hung = True
            if job.done:
                outcome.seconds = time.monotonic() - job.started
                outcome.returncode = job.proc.returncode
                outcome.output = job.output()
                for item in p.items:
                    b = self._backlog_of(item)
                    if b is not None and not _clean(b):
                        said = oracle.push_says(outcome.output, item)
                        outcome.left[item] = oracle.describe_backlog(b) + (
                            f"; push says: {said}" if said else "")
                self.push_job = None
            return
        if not self.pushes_left:
            return
        p = self.pushes_left[0]
        if not all(self._item_ready(i) for i in p.items) or any(
                d in [x.name for x in self.damages_left] for d in p.damaged):
            return
        if p.settle:  # "days apart": what was delivered before is drained first
            if self.settle_since is None:
                self.settle_since = time.monotonic()
            if time.monotonic() < self.settle_next:
                return
            self.settle_next = time.monotonic() + 0.2  # reading journals is not free
            waiting = [i for i in self._delivered_so_far()
                       if (b := self._backlog_of(i)) is not None and not _clean(b)]
            if waiting and time.monotonic() - self.settle_since < SETTLE_MAX_S:
                return
            if waiting:
                self.notes.append(f"{p.name}: started before {', '.join(waiting)} drained "
                                  f"({SETTLE_MAX_S:.0f} s)")
            self.settle_since = None
        self.pushes_left.pop(0)
        paths = [str(self.workdir / p.folder)] if p.folder else \
            [str(self._item_path(i)) for i in p.items]
        started = [j.name for j in self.s.journals
                   if j.delivery == "live" and j.name not in self.offline]
        started += [i for o in self.delivery.pushes for i in o.items]
        outcome = oracle.PushOutcome(p.name, p.items, p.folder, p.damaged, started=True,
                                     waiting=tuple(i for i in p.items
                                                   if self._waits_for_creator(i, started)))
        outcome.concurrent |= self._copies_beside_daemons(p.items)
        self.delivery.pushes.append(outcome)
        job = Job(["push", "--timeout", str(PUSH_TIMEOUT), *paths], {**self.daemon_env, **WIDE},
                  self.workdir / f"push-{p.name}.log")
        self.push_job = (p, job, outcome)
        self._count("push")

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
            if _clean(backlog):
                return time.monotonic() - start
            self._watch_daemons()
            time.sleep(0.1)
        return None

    def _delivered(self) -> list[str]:
        """Every journal and copy that is delivered (not the decoy, not the damaged ones)."""
        names = [j.name for j in self.s.journals if j.delivery != "none"]
        return names + [x.name for x in self.s.exports]

    def _backlogs(self) -> dict[str, Any]:
        out = {}
        for item in self._delivered():
            b = self._backlog_of(item)
            if b is not None:
                out[item] = b
        return out

    def _drain_multi(self) -> float | None:
        """Faults off, every live daemon up; what pushes left behind is pushed again (a
        repair, noted, not counted: the scheduled push's outcome is what the oracle checks)."""
        if self.server.running:
            self.fired += sum(r["fired"] for r in self.server.faults())
            self.server.clear_faults()
        start = time.monotonic()
        self.offline.clear()
        for d in self.daemons.values():
            d.hurry()
            d.start()
        pushed = [i for p in self.s.pushes for i in p.items]
        repair: Job | None = None
        while time.monotonic() - start < self.drain_timeout:
            self._watch_daemons()
            left = {i: b for i, b in self._backlogs().items() if not _clean(b)}
            if not left:
                if repair is not None:
                    repair.kill()
                return time.monotonic() - start
            if repair is not None and repair.done:
                repair = None
            todo = [i for i in left if i in pushed]
            if todo and repair is None:
                self.notes.append(f"drain: pushed {' '.join(todo)} again")
                repair = Job(["push", "--timeout", str(PUSH_TIMEOUT),
                              *[str(self._item_path(i)) for i in todo]],
                             {**self.daemon_env, **WIDE}, self.workdir / "push-repair.log")
            time.sleep(0.1)
        if repair is not None:
            repair.kill()
        return None


def run_schedule(schedule: Schedule, workdir: Path, **kwargs: Any) -> Result:
    return Runner(schedule, workdir, **kwargs).run()
