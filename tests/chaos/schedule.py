"""A chaos schedule, built from a seed: who logs what, how each process ends, which faults hit.

Pure: :func:`build` draws everything from ``random.Random(seed)``, so a seed is a complete
reproduction of the plan (the timing of real processes still varies from run to run; the
oracle's expectations are computed from what the processes reported, not from the plan).

    >>> s = build(7)
    >>> s == build(7) and 1 <= len([w for w in s.writers if w.role == "trainer"]) <= 3
    True
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, replace
from typing import Any

# How a writer process ends, and the server state each leads to (the oracle's table).
ENDS = ("finish", "fail", "exception", "atexit", "sigterm", "close", "sigkill")
END_STATUS: dict[str, str | None] = {
    "finish": "COMPLETED", "atexit": "COMPLETED", "fail": "FAILED", "exception": "FAILED",
    "sigterm": "TERMINATED", "close": None, "sigkill": "FAILED",
}
SIGNALLED = ("sigterm", "sigkill")  # the runner ends these; the process idles until then

# Fault modes of syncd/server/faults.py, and the paths the daemon uses (the busy ones weighed
# more, so that most rules fire while the writers are still logging).
NET_MODES = ("refuse", "close", "reset", "stall")
HTTP_MODES = ("500", "502", "503", "429")
PATHS = ("/", "/", "/", "/ingest/metrics", "/ingest/metrics", "/api/runs/create", "/api/runs/resume",
         "/api/runs/status/update", "/api/runs/config/update", "/api/runs/tags/update",
         "/api/runs/details", "/api/runs/logName/add")

REAPER_S = 1.0  # a reaper that bites: the daemon heartbeats every 5 s
CLIENT_TIMEOUT = 1.5  # the daemon's HTTP timeout in chaos; stalls last longer than this


@dataclass(frozen=True)
class Op:
    """A state change a writer makes before logging its ``index``-th step."""

    index: int
    kind: str  # config | add_tags | remove_tags
    arg: Any


@dataclass(frozen=True)
class Writer:
    """One process writing one run with ``pluto_offline``."""

    name: str
    role: str  # trainer | eval (resumes, close()s) | fork (child of an unsynced parent) | resume
    run_id: str  # the run's client id (for ``resume``: the run it reattaches to)
    end: str  # one of ENDS
    steps: int
    names: tuple[str, ...]
    interval: float  # seconds between log() calls
    explicit_steps: bool = True
    first_step: int = 0
    ops: tuple[Op, ...] = ()
    config: dict | None = None
    tags: tuple[str, ...] = ()
    signal_after: float | None = None  # sigterm/sigkill: seconds after init (once it logged)
    after: str | None = None  # eval: starts once this writer is up; fork/resume: once it exited
    parent: str | None = None  # fork: the parent's run_id
    fork_frac: float = 0.5  # fork: fork at this fraction of the parent's reported steps
    by_display: bool = False  # resume: by the run's display id (once the daemon created it)
    gate: str | None = None  # trainer: wait until this eval writer has exited before ending


@dataclass(frozen=True)
class Action:
    """Something the runner does to the server or the daemon ``at`` seconds into the schedule."""

    at: float
    kind: str  # fault | daemon_kill | daemon_start | server_restart
    fault: dict | None = None


@dataclass(frozen=True)
class Schedule:
    seed: int
    project: str
    writers: tuple[Writer, ...]
    actions: tuple[Action, ...]
    daemon_from_start: bool = True
    offline_until: str | None = None  # the daemon first starts once this writer is up
    reaper: tuple[float, float] = (3600.0, 3600.0)
    client_timeout: float = CLIENT_TIMEOUT
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def runs(self) -> list[str]:
        """The client ids of the runs this schedule creates (one server run each)."""
        return [w.run_id for w in self.writers if w.role in ("trainer", "fork")]

    def writer(self, name: str) -> Writer:
        return next(w for w in self.writers if w.name == name)


def _ops(rng: random.Random, steps: int, prefix: str) -> tuple[Op, ...]:
    ops: list[Op] = []
    for _ in range(rng.randint(0, 4)):
        kind = rng.choice(("config", "config", "add_tags", "remove_tags"))
        if kind == "config":
            arg: Any = {rng.choice(("lr", "epochs", "opt")): rng.randint(0, 99)}
            if rng.random() < 0.4:
                arg = {"model": {rng.choice(("depth", "width")): rng.randint(1, 9)}}
        else:
            arg = [f"{prefix}{rng.randint(0, 3)}"]
        ops.append(Op(rng.randrange(steps), kind, arg))
    return tuple(sorted(ops, key=lambda o: o.index))


def _trainer(rng: random.Random, i: int, seed: int) -> Writer:
    steps = rng.randint(60, 220)
    end = rng.choice(ENDS)
    names = tuple(rng.sample(("train/loss", "train/acc", "lr", "grad/norm", "sys/mem"),
                             rng.randint(1, 3)))
    duration = rng.uniform(1.0, 2.5)
    return Writer(
        name=f"t{i}", role="trainer", run_id=f"chaos-{seed}-r{i}", end=end, steps=steps,
        names=names, interval=duration / steps, explicit_steps=rng.random() < 0.6,
        first_step=rng.choice((0, 1, 100)), ops=_ops(rng, steps, "tag"),
        config={"seed": seed, "model": {"depth": rng.randint(1, 9)}},
        tags=tuple(sorted({f"tag{rng.randint(0, 3)}", "chaos"})),
        signal_after=rng.uniform(0.2, 1.3) * duration if end in SIGNALLED else None,
    )


def _fault(rng: random.Random, at: float, client_timeout: float) -> Action:
    mode = rng.choice(NET_MODES + HTTP_MODES + ("503", "429", "reset"))
    rule: dict[str, Any] = {"mode": mode, "path": rng.choice(PATHS)}
    if rng.random() < 0.5:
        rule["count"] = rng.randint(1, 4)  # a deterministic burst: the next N matching requests
    else:  # a reproducible random burst, capped so it ends by itself
        rule.update(p=round(rng.uniform(0.2, 0.6), 2), seed=rng.randrange(1 << 30),
                    count=rng.randint(3, 8))
    if mode == "stall":
        rule["seconds"] = client_timeout + 0.5
        rule["count"] = min(rule["count"], 2)
    if mode == "429":
        rule["retry_after"] = rng.choice((1, 2))
    return Action(round(at, 3), "fault", rule)


def build(seed: int) -> Schedule:
    """The schedule of ``seed``."""
    rng = random.Random(seed)
    n = rng.randint(1, 3)
    writers = [_trainer(rng, i, seed) for i in range(n)]
    notes: list[str] = []
    if n < 4 and rng.random() < 0.4:  # an eval job attached to a live trainer's run
        host = rng.randrange(n)
        t = writers[host]
        writers[host] = replace(t, gate="e0")
        writers.append(Writer(
            name="e0", role="eval", run_id=t.run_id, end="close", steps=rng.randint(10, 40),
            names=("eval/acc",), interval=0.02, explicit_steps=True, first_step=0,
            after=t.name))
        notes.append(f"eval e0 shares {t.run_id}")
    offline_until = None
    if rng.random() < 0.3:  # a fork of a parent the daemon has not delivered yet
        parent = writers[rng.randrange(n)]
        writers.append(Writer(
            name="f0", role="fork", run_id=f"chaos-{seed}-fork", end=rng.choice(ENDS),
            steps=rng.randint(30, 100), names=("train/loss",), interval=0.01,
            explicit_steps=False, ops=_ops(rng, 30, "ftag"), config={"fork": True},
            tags=("forked",), after=parent.name, parent=parent.run_id,
            fork_frac=rng.random()))
        w = writers[-1]
        if w.end in SIGNALLED:
            writers[-1] = replace(w, signal_after=rng.uniform(0.2, 1.0))
        offline_until = "f0"
        notes.append(f"fork f0 of unsynced {parent.run_id}")
    if rng.random() < 0.3:  # a later job reattaching to a run, by display id when known
        target = writers[rng.randrange(n)]
        end = rng.choice(ENDS)
        # after the run's last writer (and after a fork of it: the child inherits the parent's
        # config as of the fork, whatever the resumer changes later and whenever it lands)
        fork = next((w for w in writers if w.role == "fork"), None)
        after = fork.name if fork is not None and fork.after == target.name else target.name
        writers.append(Writer(
            name="s0", after=after, role="resume", run_id=target.run_id, end=end,
            steps=rng.randint(20, 80),
            names=target.names, interval=0.01, explicit_steps=False,
            ops=_ops(rng, 20, "rtag"), by_display=rng.random() < 0.7,
            signal_after=rng.uniform(0.2, 1.0) if end in SIGNALLED else None))
        notes.append(f"resume s0 of {target.run_id}")
    actions: list[Action] = []
    horizon = 3.0
    for _ in range(rng.randint(2, 5)):
        actions.append(_fault(rng, rng.uniform(0, horizon), CLIENT_TIMEOUT))
    for _ in range(rng.randint(0, 2)):
        at = rng.uniform(0.2, horizon)
        actions += [Action(round(at, 3), "daemon_kill"),
                    Action(round(at + rng.uniform(0.2, 1.5), 3), "daemon_start")]
    if rng.random() < 0.3:
        actions.append(Action(round(rng.uniform(0.3, horizon), 3), "server_restart"))
    daemon_from_start = offline_until is None and rng.random() < 0.8
    if not daemon_from_start and offline_until is None:
        actions.append(Action(round(rng.uniform(1.0, horizon + 1), 3), "daemon_start"))
        notes.append("offline start")
    reaper = (3600.0, 3600.0)  # out of the way, except in some schedules:
    if rng.random() < 0.15:  # the server marks runs FAILED 1 s after their last heartbeat
        reaper = (REAPER_S, REAPER_S)
        notes.append("reaper 1s")
    return Schedule(seed=seed, project=f"chaos-{seed}", writers=tuple(writers),
                    actions=tuple(sorted(actions, key=lambda a: a.at)),
                    daemon_from_start=daemon_from_start, offline_until=offline_until,
                    reaper=reaper, notes=tuple(notes))
