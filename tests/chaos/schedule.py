"""A chaos schedule, built from a seed: who logs what, how each process ends, which faults hit.

Pure: :func:`build` draws everything from ``random.Random(seed)``, so a seed is a complete
reproduction of the plan (the timing of real processes still varies from run to run; the
oracle's expectations are computed from what the processes reported, not from the plan).

Two kinds of schedule. Most seeds build a **single-journal** schedule (one journal, one
daemon: :func:`build_single`, unchanged since the suite began). About a third
(:data:`MULTI_FRACTION`, drawn by :func:`is_multi` from the seed alone) build a
**multi-journal** one (:func:`build_multi`): one run written from 2-4 journals (ranks on
nodes, Slurm allocations, an eval job on another node, a carried export), each journal
delivered by its own ``plutosync run`` or by ``plutosync push`` afterwards, in a random order.

    >>> s = build(7)
    >>> s == build(7) and 1 <= len([w for w in s.writers if w.role == "trainer"]) <= 3
    True
    >>> m = build(next(i for i in range(100) if is_multi(i)))
    >>> len(m.journals) >= 2 and m.shared is not None
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
OPENERS = ("trainer", "fork", "rank", "alloc")  # roles whose init() may create the run

# Fault modes of syncd/server/faults.py, and the paths the daemon uses (the busy ones weighed
# more, so that most rules fire while the writers are still logging).
NET_MODES = ("refuse", "close", "reset", "stall")
HTTP_MODES = ("500", "502", "503", "429")
PATHS = ("/", "/", "/", "/ingest/metrics", "/ingest/metrics", "/api/runs/create", "/api/runs/resume",
         "/api/runs/status/update", "/api/runs/config/update", "/api/runs/tags/update",
         "/api/runs/details", "/api/runs/logName/add")

# multi-journal schedules also hit the string series' endpoint
MULTI_PATHS = PATHS + ("/ingest/data", "/ingest/data")

REAPER_S = 1.0  # a reaper that bites: the daemon heartbeats every 5 s
CLIENT_TIMEOUT = 1.5  # the daemon's HTTP timeout in chaos; stalls last longer than this

MULTI_FRACTION = 0.35  # of seeds: a multi-journal schedule
SCENARIOS = ("ranks", "allocs", "eval", "export")


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
    # multi-journal schedules
    journal: str = "j0"  # the journal (PLUTO_DIR) it writes: a name in Schedule.journals
    env_run_id: bool = False  # rank: PLUTO_RUN_ID=run_id, init(run_id=os.environ.get(...))
    resume: bool = False  # alloc: init(run_id=..., resume=True)
    after_exit: bool = False  # eval: attach once ``after`` has exited (else while it runs)
    strings: tuple[str, ...] = ()  # string-series names (trainer.string_step says when)
    bad: str | None = None  # a refused input planted: config_str | huge_config | too_many_tags
    project: str | None = None  # another project (the decoy of a damaged journal)
    run_name: str | None = None  # the name passed to init() (default: the writer's name)
    # a worker forked after init() (a DataLoader-style process): (at step index, its own
    # steps, how it leaves: os_exit | sys_exit); it logs "worker/<name>" as a writer of its own
    worker: tuple[int, int, str] | None = None
    # what it records besides numbers (tests/chaos/extras.py): print, hist, image, artifact
    extras: tuple[str, ...] = ()
    artifact_at: int | None = None  # the log() call (index) that carries the artifact
    artifact_size: int = 0  # bytes

    @property
    def attaches(self) -> bool:
        """Whether its init() attaches to a run that may exist (resume=True, PLUTO_RUN_ID)
        rather than creating one."""
        return self.role in ("eval", "resume") or self.env_run_id or self.resume


@dataclass(frozen=True)
class Action:
    """Something the runner does to the server or the daemon ``at`` seconds into the schedule."""

    at: float
    kind: str  # fault | daemon_kill | daemon_start | server_restart
    fault: dict | None = None
    journal: str | None = None  # daemon_kill / daemon_start: whose daemon (multi-journal)


@dataclass(frozen=True)
class JournalPlan:
    """One journal directory (a node, an allocation) of a multi-journal schedule."""

    name: str
    dir: str  # relative to the schedule's work dir
    delivery: str  # live (a ``plutosync run`` beside the jobs) | push (afterwards) | none
    offline_at: float | None = None  # live: the daemon first starts then (None: at once)


@dataclass(frozen=True)
class Export:
    """``plutosync export`` of a journal: while ``writer`` runs (``during``) or after it."""

    name: str
    journal: str
    writer: str
    during: bool
    out: str  # the copy, relative to the work dir


@dataclass(frozen=True)
class Push:
    """One ``plutosync push``: of ``items`` (journal and export names), or of ``folder``
    (a directory holding them, and the ``damaged`` journals planted beside them)."""

    name: str
    items: tuple[str, ...]
    folder: str | None = None
    settle: bool = False  # "days apart": first wait until all delivered so far is drained
    damaged: tuple[str, ...] = ()  # names in Schedule.damages


@dataclass(frozen=True)
class Damage:
    """A damaged journal dropped into a push folder: random bytes over the events table's
    root page (``page``), a garbage header (``header``), or a 0-byte file (``empty``); the
    first two are made from the decoy writer's journal once it exited."""

    name: str
    kind: str
    path: str  # relative to the work dir: <folder>/bad-<kind>/journal.db
    decoy: str | None  # the writer whose journal is copied and damaged
    seed: int


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
    # multi-journal schedules (empty: the single journal of build_single)
    journals: tuple[JournalPlan, ...] = ()
    exports: tuple[Export, ...] = ()
    pushes: tuple[Push, ...] = ()
    damages: tuple[Damage, ...] = ()
    shared: str | None = None  # the run written from several journals
    scenario: str | None = None  # ranks | allocs | eval | export

    @property
    def multi(self) -> bool:
        return bool(self.journals)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def runs(self) -> list[str]:
        """The client ids of the runs this schedule creates (one server run each)."""
        if self.multi:
            return list(dict.fromkeys(w.run_id for w in self.writers
                                      if w.role in OPENERS and w.project is None))
        return [w.run_id for w in self.writers if w.role in ("trainer", "fork")]

    def journal_plan(self, name: str) -> JournalPlan:
        return next(j for j in self.journals if j.name == name)

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


def _fault(rng: random.Random, at: float, client_timeout: float,
           paths: tuple[str, ...] = PATHS) -> Action:
    mode = rng.choice(NET_MODES + HTTP_MODES + ("503", "429", "reset"))
    rule: dict[str, Any] = {"mode": mode, "path": rng.choice(paths)}
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


def is_multi(seed: int) -> bool:
    """Whether ``seed`` builds a multi-journal schedule (drawn apart from the schedule itself,
    so that the single-journal schedules of all other seeds are the ones they always were)."""
    return random.Random(f"pluto-chaos-journals:{seed}").random() < MULTI_FRACTION


def build(seed: int) -> Schedule:
    """The schedule of ``seed``: multi-journal for about a third of seeds, else single."""
    return build_multi(seed) if is_multi(seed) else build_single(seed)


def build_single(seed: int) -> Schedule:
    """One journal, one daemon: 1-3 trainers, maybe an eval, a fork, a later resume."""
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
    return Schedule(seed=seed, project=f"chaos-{seed}", writers=_with_extras(seed, _with_workers(seed, writers)),
                    actions=tuple(sorted(actions, key=lambda a: a.at)),
                    daemon_from_start=daemon_from_start, offline_until=offline_until,
                    reaper=reaper, notes=tuple(notes))


# ------------------------------------------------------------------ multi-journal schedules
def build_multi(seed: int) -> Schedule:
    """One run (``chaos-<seed>-shared``) written from 2-4 journals, in one of four scenarios:

    - ``ranks``: 2 nodes (journals) x 1-2 ranks, PLUTO_RUN_ID set, each rank its own metric
      names; the ranks of a node end alike (finish, atexit, exception, SIGTERM, SIGKILL);
    - ``allocs``: 2-4 Slurm allocations one after another, one journal each,
      ``init(run_id, resume=True)`` (the first maybe without), explicit steps continuing from
      the previous one; all but the last end by SIGTERM (or finish, SIGKILL), the last by finish;
    - ``eval``: a trainer, and 1-2 eval jobs attaching from other journals (``resume=True``,
      a few points, ``close()``) while it runs or after it ended;
    - ``export``: a trainer whose journal is exported while it runs and again after; both
      copies are pushed, and the original delivered too.

    Each journal is delivered by its own ``plutosync run`` (maybe offline at first, maybe
    SIGKILLed and restarted) or by ``plutosync push`` after its jobs ended: pushes of several
    journals at once (listed, or a folder) or one by one, in a random order, some only once
    everything before them is delivered ("days apart"). Mixed in: a run with a refused input
    (a string config, a ~9 MB config, 51 tags) in one of the journals, and damaged journals in push
    folders. Network faults, server restarts and the reaper as in single-journal schedules.
    """
    rng = random.Random(seed)
    scenario = rng.choice(SCENARIOS)
    shared = f"chaos-{seed}-shared"
    writers = {"ranks": _ranks, "allocs": _allocs, "eval": _evals,
               "export": _exported}[scenario](rng, seed, shared)
    jnames = list(dict.fromkeys(w.journal for w in writers))
    notes = [f"{scenario}: " + " ".join(f"{w.name}@{w.journal}:{w.end}" for w in writers)]
    exports: list[Export] = []
    if scenario == "export":
        t = writers[0]
        exports = [Export("x0", t.journal, t.name, True, ""), Export("x1", t.journal, t.name,
                                                                      False, "")]
    if scenario != "export" and rng.random() < 0.4:  # a refused input in an extra run
        bad = rng.choice(("config_str", "config_str", "huge_config"))
        # drawn apart from ``rng``: the schedules of earlier soaks stay as they were
        if bad == "config_str" and random.Random(f"{seed}-tags").random() < 0.4:
            bad = "too_many_tags"
        home = rng.choice(jnames)
        writers.append(Writer(
            name="b0", role="trainer", run_id=f"chaos-{seed}-bad0",
            end=rng.choice(("finish", "atexit")), steps=rng.randint(20, 50),
            names=("train/loss",), interval=0.01, explicit_steps=rng.random() < 0.5,
            tags=("chaos", "bad"), journal=home, bad=bad, strings=("note/b0",)))
        notes.append(f"refused input: b0@{home} {bad}")
    delivery = {j: rng.choice(("live", "push")) for j in jnames}
    items = [j for j in jnames if delivery[j] == "push"] + [x.name for x in exports]
    rng.shuffle(items)
    groups: list[list[str]] = []
    together = rng.random() < 0.4
    for it in items:
        if not groups or (not together and rng.random() < 0.6):
            groups.append([it])
        else:
            groups[-1].append(it)
    pushes: list[Push] = []
    where: dict[str, str] = {}  # journal or export name -> the folder it is pushed from
    for g, group in enumerate(groups):
        folder = f"push-{g}" if rng.random() < 0.4 else None
        for it in group:
            if folder:
                where[it] = folder
        pushes.append(Push(f"p{g}", tuple(group), folder, settle=rng.random() < 0.5))
    damages: list[Damage] = []
    folders = [p for p in pushes if p.folder]
    if folders and rng.random() < 0.5:  # a damaged journal dropped into a push folder
        p = rng.choice(folders)
        kind = rng.choice(("page", "header", "empty"))
        decoy = None
        if kind != "empty":
            decoy = "d0"
            writers.append(Writer(
                name="d0", role="trainer", run_id=f"chaos-{seed}-decoy", end="finish",
                steps=40, names=("train/loss",), interval=0.003, explicit_steps=True,
                config={"decoy": True}, journal="decoy", project=f"chaos-{seed}-decoy"))
        damages.append(Damage(f"bad-{kind}", kind, f"{p.folder}/bad-{kind}/journal.db", decoy,
                              rng.randrange(1 << 30)))
        pushes[pushes.index(p)] = replace(p, damaged=(f"bad-{kind}",))
        notes.append(f"damaged journal ({kind}) in {p.folder}")
    journals = []
    actions: list[Action] = []
    horizon = 3.0 if scenario != "allocs" else 4.0
    for j in jnames:
        offline = None
        if delivery[j] == "live" and rng.random() < 0.2:
            offline = round(rng.uniform(1.0, horizon + 1), 3)
        journals.append(JournalPlan(j, f"{where.get(j, 'nodes')}/{j}", delivery[j], offline))
        if delivery[j] == "live":
            for _ in range(rng.randint(0, 1)):
                at = rng.uniform(0.2, horizon)
                actions += [Action(round(at, 3), "daemon_kill", journal=j),
                            Action(round(at + rng.uniform(0.2, 1.5), 3), "daemon_start",
                                   journal=j)]
    if any(w.journal == "decoy" for w in writers):
        journals.append(JournalPlan("decoy", "decoy", "none"))
    exports = [replace(x, out=f"{where[x.name]}/{x.name}/journal.db" if x.name in where
                       else f"carry/{x.name}.db") for x in exports]
    for _ in range(rng.randint(2, 5)):
        actions.append(_fault(rng, rng.uniform(0, horizon), CLIENT_TIMEOUT, MULTI_PATHS))
    if rng.random() < 0.3:
        actions.append(Action(round(rng.uniform(0.3, horizon), 3), "server_restart"))
    reaper = (3600.0, 3600.0)
    if rng.random() < 0.1:
        reaper = (REAPER_S, REAPER_S)
        notes.append("reaper 1s")
    notes.append(" ".join(f"{j.name}:{j.delivery}" + ("(offline)" if j.offline_at else "")
                          for j in journals if j.delivery != "none"))
    if pushes:
        notes.append("pushes: " + " then ".join(
            ("+".join(p.items) + (f" in {p.folder}" if p.folder else "")
             + (" later" if p.settle else "")) for p in pushes))
    return Schedule(seed=seed, project=f"chaos-{seed}", writers=_with_extras(seed, _with_workers(seed, writers)),
                    actions=tuple(sorted(actions, key=lambda a: a.at)), reaper=reaper,
                    notes=tuple(notes), journals=tuple(journals), exports=tuple(exports),
                    pushes=tuple(pushes), damages=tuple(damages), shared=shared,
                    scenario=scenario)


def _ranks(rng: random.Random, seed: int, shared: str) -> list[Writer]:
    """2 nodes x 1-2 ranks; a node's ranks end alike (its fate), at about the same time."""
    writers: list[Writer] = []
    for node in range(2):
        fate = rng.choice(("finish", "finish", "atexit", "exception", "sigterm", "sigkill"))
        duration = rng.uniform(1.0, 2.0)
        signal_after = rng.uniform(0.3, 1.1) * duration if fate in SIGNALLED else None
        for _ in range(rng.randint(1, 2)):
            r = len(writers)
            steps = rng.randint(60, 160)
            metrics = rng.sample(("loss", "acc", "grad"), rng.randint(1, 2))
            writers.append(Writer(
                name=f"r{r}", role="rank", run_id=shared, end=fate, steps=steps,
                names=tuple(f"rank{r}/{m}" for m in metrics), interval=duration / steps,
                explicit_steps=rng.random() < 0.5, ops=_ops(rng, steps, "tag") if r == 0 else (),
                config={"seed": seed, "job": "ddp"}, tags=("chaos", "ddp"),
                signal_after=signal_after, journal=f"j{node}", env_run_id=True,
                strings=(f"rank{r}/note",), run_name="ddp"))
    return writers


def _allocs(rng: random.Random, seed: int, shared: str) -> list[Writer]:
    """2-4 allocations one after another, each its own journal, steps continuing."""
    n = rng.choice((2, 2, 3, 3, 4))
    first_resume = rng.random() < 0.5  # the same sbatch script each time, or a first one
    names = tuple(rng.sample(("train/loss", "train/acc", "lr", "grad/norm"), rng.randint(1, 2)))
    writers: list[Writer] = []
    for k in range(n):
        end = "finish" if k == n - 1 else rng.choice(
            ("sigterm", "sigterm", "sigterm", "finish", "sigkill"))
        steps = rng.randint(40, 100)
        duration = rng.uniform(0.4, 0.9)
        writers.append(Writer(
            name=f"a{k}", role="alloc", run_id=shared, end=end, steps=steps, names=names,
            interval=duration / steps, explicit_steps=True, ops=_ops(rng, steps, "atag"),
            config={"seed": seed, "job": "slurm"}, tags=("chaos", "slurm"),
            signal_after=rng.uniform(0.3, 1.0) * duration if end in SIGNALLED else None,
            after=f"a{k - 1}" if k else None, journal=f"j{k}", resume=k > 0 or first_resume,
            run_name="slurm" if first_resume else f"a{k}", strings=(f"note/a{k}",)))
    return writers


def _trainer_of(rng: random.Random, seed: int, shared: str, ends: tuple[str, ...]) -> Writer:
    steps = rng.randint(60, 160)
    end = rng.choice(ends)
    duration = rng.uniform(1.0, 2.0)
    return Writer(
        name="t0", role="trainer", run_id=shared, end=end, steps=steps,
        names=tuple(rng.sample(("train/loss", "train/acc", "lr", "grad/norm"), rng.randint(1, 2))),
        interval=duration / steps, explicit_steps=rng.random() < 0.6,
        first_step=rng.choice((0, 1)), ops=_ops(rng, steps, "tag"),
        config={"seed": seed, "job": "train"}, tags=("chaos", "train"),
        signal_after=rng.uniform(0.4, 1.2) * duration if end in SIGNALLED else None,
        journal="j0", strings=("note/t0",), run_name="train")


def _evals(rng: random.Random, seed: int, shared: str) -> list[Writer]:
    """A trainer (j0) and 1-2 eval jobs attaching from their own journals; at most one while
    it runs (the trainer waits for its close() before ending), the other after it ended."""
    t = _trainer_of(rng, seed, shared, ENDS)
    writers = [t]
    during = rng.random() < 0.6
    for e in range(rng.choice((1, 1, 2))):
        after_exit = not (during and e == 0)
        writers.append(Writer(
            name=f"e{e}", role="eval", run_id=shared, end="close", steps=rng.randint(2, 6),
            names=(f"eval{e}/acc",), interval=0.02, explicit_steps=True,
            first_step=rng.choice((0, 1000)), after="t0", after_exit=after_exit,
            journal=f"j{e + 1}", resume=True, strings=(f"note/e{e}",), run_name=f"eval{e}"))
    if during:
        writers[0] = replace(t, gate="e0")
    return writers


def _exported(rng: random.Random, seed: int, shared: str) -> list[Writer]:
    """A trainer whose journal is carried out twice (no close(): a copy taken while it runs
    shows its writer dead, and only a later end tells the run's state)."""
    return [_trainer_of(rng, seed, shared, tuple(e for e in ENDS if e != "close"))]


def _with_workers(seed: int, writers: list[Writer]) -> tuple[Writer, ...]:
    """Give some writers a forked worker that logs (issue 11: DataLoader workers, a Pool).
    Drawn from a generator of their own, so a seed's other choices stay as they were."""
    out = []
    for w in writers:
        rng = random.Random(f"{seed}/{w.name}/worker")
        if w.role in ("trainer", "fork", "resume", "eval") and w.steps >= 4 \
                and rng.random() < 0.3 and not w.bad:
            w = replace(w, worker=(rng.randrange(1, max(2, w.steps // 2)), rng.randint(5, 30),
                                   rng.choice(("os_exit", "sys_exit"))))
        out.append(w)
    return tuple(out)


def _with_extras(seed: int, writers: tuple[Writer, ...]) -> tuple[Writer, ...]:
    """Have some writers print lines and log histograms, images and an artifact (issues 9
    and 10); a generator of their own, so a seed's other choices stay as they were."""
    out = []
    for w in writers:
        rng = random.Random(f"{seed}/{w.name}/extras")
        if w.bad or w.project or w.steps < 2:
            out.append(w)
            continue
        kinds = tuple(k for k, p in (("print", 0.5), ("hist", 0.3), ("image", 0.25),
                                     ("artifact", 0.12)) if rng.random() < p)
        if "artifact" in kinds:
            w = replace(w, artifact_at=rng.randrange(w.steps),
                        artifact_size=rng.randint(1, 4) * 1024 * 1024)
        out.append(replace(w, extras=kinds))
    return tuple(out)
