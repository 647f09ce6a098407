"""The oracle: what the trainers reported as returned vs what the server holds, as counts.

Failure classes (each must be 0):

- ``lost``: a reported metric point missing or with the wrong value, a logged metric name the
  server does not list, config or tags not as last set, a run missing from the server;
- ``phantom``: a metric point on the server that was never logged;
- ``dup_points``: more metric rows than distinct (name, step) pairs;
- ``dup_runs``: more runs in the project than the schedule created;
- ``wrong_state``: a final status (or fork link) other than the table in ``schedule.END_STATUS``
  (where the server's reaper bites, a run left RUNNING may also be FAILED: nothing else); a
  run whose last writer was SIGKILLed is FAILED (the daemon reports it, ``{"reason": "killed"}``);
- ``stuck``: events still pending, or spill files not folded, after the drain (or no drain);
- ``rejected``: events the daemon recorded as refused for good (every fault is transient),
  other than those of the refused inputs a multi-journal schedule planted;
- ``writer_errors``: a workload process that exited in a way its plan does not explain;
- ``daemon_exits``: a ``plutosync run`` that exited without the runner signalling it;

and, for multi-journal schedules (one run written from several journals):

- ``dup_data``: a string-series record stored more than once (the server does not deduplicate
  ``/ingest/data``: copies of one journal pushed must not send it twice);
- ``conflict``: a journal held as a conflict with the run, or the run named after a journal
  that only attached to it (``resume=True``, then ``close()``: it must never create the run);
- ``unrecorded``: a planted refused input (a string config) not recorded in its journal's
  ``rejected`` table with a reason;
- ``push_errors``: a ``plutosync push`` (or ``export``) that crashed, exited with another code
  than its inputs call for (1 when it holds a damaged journal or a refused input, else 0),
  did not name a damaged journal in its output, hung, or left its healthy journals undelivered.

A writer killed (SIGKILL/SIGTERM) between a call's return and its report may have done one more
thing than it reported: the next step, its last announced (``will``) state change. Both outcomes
are accepted for it; nothing else is.

The final status of a multi-journal run is that of its latest status-changing event **by event
time**, across all its journals: an ``init()`` (create or resume) sets RUNNING, ``finish()`` /
atexit COMPLETED, ``finish(code=1)`` / an exception FAILED, SIGTERM TERMINATED, ``close()``
nothing; a journal whose last writer of the run was SIGKILLed without ending it counts as
FAILED ``{"reason": "killed"}`` at the time of the run's last event in that journal (when no
writer ended the run there since its last open; a ``close()`` is no end). Each event's
time is known to an interval (from the writer's reports before and after the call, or the
runner's signal); every status whose interval can be the latest is accepted.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tests.chaos import extras
from tests.chaos.schedule import END_STATUS, REAPER_S, Schedule, Writer
from tests.chaos.trainer import huge_config, string_step, text, value
from tests.fixtures.server import user_config

SEVERITY = {"COMPLETED": 1, "TERMINATED": 2, "CANCELLED": 3, "FAILED": 4}
FAILURES = ("lost", "phantom", "dup_points", "dup_runs", "wrong_state", "stuck", "rejected",
            "writer_errors", "daemon_exits", "dup_data", "conflict", "unrecorded",
            "push_errors", "mismatched")
# Issue 8 item 9: a run whose last writer was SIGKILLed is reported FAILED {"reason": "killed"}
# (769305f). True accepts the old outcome too (left RUNNING) in single-journal schedules, to
# run the suite against a daemon from before the rule.
KILLED_MAY_STAY_RUNNING = False
SLACK_S = 0.5  # a metrics event's time is its first record's: up to a fold interval earlier
EXIT_CODES = {"finish": {0}, "fail": {0}, "close": {0}, "atexit": {0}, "exception": {1},
              "sigterm": {143, -15}, "sigkill": {-9}}


class ServerReads(Protocol):
    def list_runs(self, project: str, **params: Any) -> list[dict[str, Any]]: ...
    def metrics(self, run_id: int, project: str, name: str | None = None,
                **params: Any) -> list[dict[str, Any]]: ...
    def metric_names(self, project: str, run_id: int | None = None) -> list[str]: ...
    def metric_counts(self, run_id: int) -> dict[str, int]: ...


@dataclass
class Counts:
    lost: int = 0
    phantom: int = 0
    dup_points: int = 0
    dup_runs: int = 0
    wrong_state: int = 0
    stuck: int = 0
    rejected: int = 0
    writer_errors: int = 0
    daemon_exits: int = 0
    dup_data: int = 0
    conflict: int = 0
    unrecorded: int = 0
    push_errors: int = 0
    mismatched: int = 0  # a file or histogram on the server that differs from what was logged
    # figures, not failures
    points_checked: int = 0
    strings_checked: int = 0
    absorbed_duplicates: int = 0  # replays the server deduplicated (received - stored)
    resent_strings: int = 0  # string rows stored twice after a request without an answer
    lines_checked: int = 0  # console lines (tests/chaos/extras.py)
    rows_checked: int = 0  # histogram rows
    files_checked: int = 0  # images and artifacts
    runs: int = 0
    details: list[str] = field(default_factory=list)

    @property
    def failures(self) -> int:
        return sum(getattr(self, k) for k in FAILURES)

    def add(self, kind: str, n: int, why: str) -> None:
        if n:
            setattr(self, kind, getattr(self, kind) + n)
            self.details.append(f"{kind} +{n}: {why}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Launch:
    """What happened to one writer at run time (filled in by the runner)."""

    exit_code: int | None = None
    fork_step: int | None = None
    run_ref: str | None = None  # what it passed as run_id (a display id for a resume)
    signalled: str | None = None  # sigterm / sigkill sent by the runner
    started: bool = False
    first_step: int | None = None  # an allocation: where the previous one stopped
    signalled_at: float | None = None  # wall clock, just before the signal was sent
    exited_at: float | None = None  # wall clock, when the runner saw it had exited


@dataclass
class PushOutcome:
    """One scheduled ``plutosync push``, as the runner saw it."""

    name: str
    items: tuple[str, ...]
    folder: str | None = None
    damaged: tuple[str, ...] = ()
    started: bool = False
    returncode: int | None = None
    output: str = ""
    hung: bool = False
    left: dict[str, str] = field(default_factory=dict)  # item -> its backlog right after
    # items that only attach to a run whose creating journal was not delivered yet: a daemon
    # may hold them until it is (then the push exits 1 and they are pushed again later)
    waiting: tuple[str, ...] = ()


@dataclass
class ExportOutcome:
    name: str
    journal: str
    while_running: bool = False
    returncode: int | None = None
    output: str = ""


@dataclass
class Delivery:
    """What the delivering processes did (filled in by the runner)."""

    t0: float = 0.0  # wall clock at the schedule's start: explanations count from it
    drained: bool = True  # the drain finished (multi-journal: backlogs are read anyway)
    daemon_exits: list[str] = field(default_factory=list)
    pushes: list[PushOutcome] = field(default_factory=list)
    exports: dict[str, ExportOutcome] = field(default_factory=dict)


def crashed(output: str) -> bool:
    """Whether a process died of an uncaught exception: Python's own traceback, at the start
    of a line (a traceback a log handler printed, indented, was caught and handled)."""
    return any(line.startswith("Traceback (most recent call last):")
               for line in output.splitlines())


def last_words(output: str) -> str:
    """The line that says why a process ended: a crash's exception, else the last line."""
    lines = [x.strip() for x in output.splitlines() if x.strip()]
    if not lines:
        return "(no output)"
    if crashed(output):
        return "traceback: " + lines[-1][:300]
    return lines[-1][:300]


def push_says(output: str, item: str) -> str | None:
    """What push printed about one of its journals (``not delivered from <path>: why``)."""
    for line in output.splitlines():
        line = line.strip()
        for tail in (f"/{item}: ", f"/{item}.db: ", f"/{item}/journal.db: "):
            if line.startswith("not delivered from") and tail in line:
                return line.split(tail, 1)[1][:300]
    return None


def describe_backlog(b: dict[str, Any]) -> str:
    parts = [f"{n} events of {r} pending" for r, n in b["pending"].items()]
    parts += [f"{r} re-assert due" for r in b["reasserts"]]
    if b["spills"]:
        parts.append(f"{b['spills']} spill files unfolded")
    return ", ".join(parts) or "nothing left"


def deep_merge(base: Any, delta: Any) -> Any:
    if not isinstance(base, dict) or not isinstance(delta, dict):
        return copy.deepcopy(delta)
    out = copy.deepcopy(base)
    for k, v in delta.items():
        out[k] = deep_merge(out.get(k), v)
    return out


def _apply_status(current: str, new: str | None) -> str:
    if new is None:
        return current
    if current in SEVERITY and SEVERITY[current] > SEVERITY[new]:
        return current  # the server ignores a lower-severity terminal status
    return new


def _writer_order(schedule: Schedule, run_id: str) -> list[Writer]:
    """The run's writers in journal order: the opener, its eval (nested), then the resumer."""
    order = {"trainer": 0, "fork": 0, "eval": 1, "resume": 2}
    return sorted((w for w in schedule.writers if w.run_id == run_id),
                  key=lambda w: order[w.role])


def expected_run(writers: list[Writer], reports: dict[str, list[dict]],
                 launches: dict[str, Launch]) -> dict[str, Any]:
    """Required and allowed points, and the sets of acceptable config, tags and status."""
    required: dict[tuple[str, int], float] = {}
    allowed: set[tuple[str, int]] = set()
    configs: list[Any] = []
    tags: list[list[str]] = []
    states = {"RUNNING"}
    for w in writers:
        lines = reports.get(w.name, [])
        launch = launches.get(w.name, Launch())
        if not launch.started or not lines:
            continue
        init = next((x for x in lines if x["op"] == "init"), None)
        if init is None:
            continue
        if w.role in ("trainer", "fork"):
            configs, tags = [init["config"]], [sorted(init["tags"])]
        # A resumer reopens the run (RUNNING). An eval's resume is journaled while its trainer
        # is still running (the runner sees to it), so it changes nothing.
        states = {"RUNNING"} if w.role == "resume" else states
        steps = [x["step"] for x in lines if x["op"] == "log"]
        for s in steps:
            for n in w.names:
                required[(n, s)] = value(n, s)
        _worker_points(lines, required)
        # Signalled between a call's return and its report (SIGTERM's handler still reports
        # the end; a state change in progress is finished first, then the run ends).
        cut = launch.signalled is not None
        if cut and len(steps) < w.steps:
            nxt = (w.first_step + len(steps)) if w.explicit_steps else \
                (steps[-1] if steps else init["step"]) + 1
            allowed.update((n, nxt) for n in w.names)
        pending: dict | None = None
        for x in lines:
            if x["op"] == "will":
                pending = x
            elif x["op"] == "did":
                pending = None
                if x["kind"] == "config":
                    configs = [deep_merge(c, x["delta"]) for c in configs]
                else:
                    tags = [sorted(x["tags"])]
        end = next((x["how"] for x in lines if x["op"] == "end"), None)
        if pending is not None and cut:  # signalled after announcing, before reporting
            if pending["kind"] == "config":
                configs = configs + [deep_merge(c, pending["delta"]) for c in configs]
            elif pending["kind"] == "tags":
                tags = tags + [sorted(pending["tags"])]
            elif end is None:
                states = states | {_apply_status(s, END_STATUS[pending["how"]]) for s in states}
        if end is not None:
            states = {_apply_status(s, END_STATUS[end]) for s in states}
        elif w.end == "sigkill" and launch.signalled is not None:
            # no end journaled: plutosync reports the dead writer FAILED {reason: killed}
            # (an eval's close() after it does not end the run)
            killed = {_apply_status(s, "FAILED") for s in states}
            states = states | killed if KILLED_MAY_STAY_RUNNING else killed
    return {"required": required, "allowed": allowed, "configs": configs, "tags": tags,
            "states": states}


def check(schedule: Schedule, reports: dict[str, list[dict]], launches: dict[str, Launch],
          server: ServerReads, backlog: dict[str, Any] | None,
          delivery: Delivery | None = None) -> Counts:
    """Compare; ``backlog`` is :func:`journal_backlog` after the drain (None: no drain); for a
    multi-journal schedule, a dict of them by journal (and copy) name."""
    delivery = delivery or Delivery()
    if schedule.multi:
        return check_multi(schedule, reports, launches, server, backlog, delivery)
    c = Counts()
    for why in delivery.daemon_exits:
        c.add("daemon_exits", 1, why)
    project = schedule.project
    server_runs = server.list_runs(project)
    by_ext: dict[str, list[dict]] = {}
    for r in server_runs:
        by_ext.setdefault(r.get("externalId") or "", []).append(r)
    expected_ids = [r for r in schedule.runs() if launches.get(_opener(schedule, r)).started]
    c.runs = len(server_runs)
    c.add("dup_runs", max(0, len(server_runs) - len(expected_ids)),
          f"{len(server_runs)} runs on the server, {len(expected_ids)} created")
    for name, launch in launches.items():
        w = schedule.writer(name)
        if launch.started and launch.exit_code not in EXIT_CODES[w.end]:
            c.add("writer_errors", 1, f"{name} ({w.role}, {w.end}) exited {launch.exit_code}")
        bugs = [x for x in reports.get(name, []) if x["op"] == "bug"]
        c.add("writer_errors", len(bugs), f"{name}: {bugs[:1]}")
    for run_id in expected_ids:
        exp = expected_run(_writer_order(schedule, run_id), reports, launches)
        if schedule.reaper[0] <= REAPER_S and "RUNNING" in exp["states"]:
            exp["states"].add("FAILED")  # a run left RUNNING may be reaped; no other may end so
        found = by_ext.get(run_id, [])
        if not found:
            c.add("lost", len(exp["required"]) + 1, f"run {run_id} is not on the server")
            continue
        _check_run(c, schedule, run_id, found[0], exp, server, launches, by_ext, reports,
                   backlog)
    if backlog is None:
        c.add("stuck", 1, "the drain did not finish in time")
    else:
        for run_id, n in backlog["pending"].items():
            c.add("stuck", n, f"{run_id}: {n} events pending after the drain")
        for run_id in backlog["reasserts"]:
            c.add("stuck", 1, f"{run_id}: final state not re-asserted after the drain")
        c.add("stuck", backlog["spills"], f"{backlog['spills']} spill files not folded")
        _files_backlog(c, "the journal", backlog)
        for run_id, rej in backlog["rejected"].items():
            c.add("rejected", len(rej), f"{run_id}: {rej[:2]}")
        for run_id, why in backlog.get("conflicts", {}).items():
            c.add("conflict", 1, f"{run_id}: held as a conflict: {why}")
    return c


def _opener(schedule: Schedule, run_id: str) -> str:
    return next(w.name for w in schedule.writers
                if w.run_id == run_id and w.role in ("trainer", "fork"))


def _check_run(c: Counts, schedule: Schedule, run_id: str, run: dict, exp: dict,
               server: ServerReads, launches: dict[str, Launch],
               by_ext: dict[str, list[dict]], reports: dict[str, list[dict]],
               backlog: dict[str, Any] | None) -> None:
    sid = int(run["id"])
    _check_points(c, schedule.project, run_id, sid, exp, server)
    _check_extras(c, schedule, run_id, sid, reports, launches, server, backlog)
    if exp["configs"] and user_config(run.get("config")) not in exp["configs"]:
        c.add("lost", 1, f"{run_id}: config {run.get('config')} not in {exp['configs']}")
    if exp["tags"] and sorted(run.get("tags") or []) not in exp["tags"]:
        c.add("lost", 1, f"{run_id}: tags {run.get('tags')} not in {exp['tags']}")
    if run.get("status") not in exp["states"]:
        c.add("wrong_state", 1, f"{run_id}: status {run.get('status')}, expected "
              f"{' or '.join(sorted(exp['states']))}")
    opener = schedule.writer(_opener(schedule, run_id))
    if opener.role == "fork":
        parent = (by_ext.get(opener.parent or "") or [{}])[0].get("id")
        step = launches[opener.name].fork_step
        if (run.get("forkedFromRunId"), run.get("forkStep")) != (parent, step):
            c.add("wrong_state", 1, f"{run_id}: fork link {run.get('forkedFromRunId')}@"
                  f"{run.get('forkStep')}, expected {parent}@{step}")


def _check_points(c: Counts, project: str, run_id: str, sid: int, exp: dict,
                  server: ServerReads) -> None:
    """Every required point once with its value, nothing never logged, names registered."""
    names = {n for n, _ in exp["required"]} | {n for n, _ in exp["allowed"]}
    rows: list[dict] = []
    for n in sorted(names):
        rows += server.metrics(sid, project, n)
    seen: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        seen.setdefault((r["logName"], int(r["step"])), []).append(r)
    dups = sum(len(v) - 1 for v in seen.values())
    c.add("dup_points", dups, f"{run_id}: {dups} repeated (name, step) rows")
    counts = server.metric_counts(sid)
    c.absorbed_duplicates += int(counts.get("duplicates", 0))
    extra = int(counts.get("stored", 0)) - len(rows)
    c.add("dup_points", max(0, extra), f"{run_id}: stored {counts.get('stored')} > read {len(rows)}")
    lost = [k for k, v in exp["required"].items()
            if k not in seen or not _same(seen[k][0].get("value"), v)]
    c.points_checked += len(exp["required"])
    c.add("lost", len(lost), f"{run_id}: points missing or wrong, e.g. {sorted(lost)[:3]}")
    phantom = [k for k in seen if k not in exp["required"] and k not in exp["allowed"]]
    c.add("phantom", len(phantom), f"{run_id}: never logged, e.g. {sorted(phantom)[:3]}")
    listed = set(server.metric_names(project, sid))
    missing = {n for n, _ in exp["required"]} - listed
    c.add("lost", len(missing), f"{run_id}: metric names not registered {sorted(missing)}")


def _worker_points(lines: list[dict], required: dict[tuple[str, int], float]) -> None:
    """The points a writer's forked worker reported as returned from log()."""
    for x in lines:
        if x["op"] == "wlog":
            required[(x["name"], x["step"])] = value(x["name"], x["step"])


def _same(got: Any, want: float) -> bool:
    try:
        return math.isclose(float(got), want, rel_tol=1e-9, abs_tol=1e-9)
    except (TypeError, ValueError):
        return False


def journal_backlog(journal_dir: Path) -> dict[str, Any]:
    """Pending events per run, runs whose final state is still to be re-asserted (due time),
    rejected events, and unfolded spill files, read-only."""
    from pluto_offline import journal as J
    from pluto_offline.journal import filerows, history, staged
    from pluto_offline.spill import SUFFIX

    j = J.Journal.open(journal_dir, readonly=True)
    try:
        spills = len(list(j.spill_dir.glob(f"*{SUFFIX}")))
        pending: dict[str, int] = {}
        for row in J.runs_with_pending(j):
            pending[row.run_id] = len(J.pending_events(j, row.key, after=row.acked_seq,
                                                       limit=1_000_000))
        reasserts = {row.run_id: row.reassert_due for row in J.runs_to_reassert(j)}
        rejected: dict[str, list] = {}
        conflicts: dict[str, str] = {}
        resent: dict[str, int] = {}
        keys = {row.key: row.run_id for row in J.all_runs(j)}
        files = {keys.get(k, str(k)): fc for k, fc in filerows.counts(j).items()}
        lost_files = [(keys.get(f["run"], str(f["run"])), f["file_name"], f["reason"])
                      for f in filerows.lost_files(j)]
        inbox = staged.incoming_dir(j.dir)
        incoming = sum(p.is_file() for p in inbox.glob("*")) if inbox.is_dir() else 0
        for row in J.all_runs(j):
            n = history.resent(j, row.key)
            if n:
                resent[row.run_id] = n
            rej = J.rejected_events(j, row.key)
            if rej:
                rejected[row.run_id] = [(r.get("kind"), r.get("reason")) for r in rej]
            if row.conflict:
                conflicts[row.run_id] = row.conflict
    finally:
        j.close()
    return {"pending": pending, "reasserts": reasserts, "rejected": rejected, "spills": spills,
            "conflicts": conflicts, "resent": resent, "incoming": incoming,
            "files_pending": {r: fc.pending for r, fc in files.items() if fc.pending},
            "files_rejected": {r: fc.rejected for r, fc in files.items() if fc.rejected},
            "files_resent": {r: fc.resent for r, fc in files.items() if fc.resent},
            "lost_files": lost_files}


# ---------------------------------------------------------------------- multi-journal schedules
@dataclass(frozen=True)
class StatusEvent:
    """A status-changing event, its time known to ``[lo, hi]`` (epoch seconds)."""

    status: str
    lo: float
    hi: float
    who: str  # e.g. "a1 in j1: SIGTERM"
    killed: bool = False


def _first(lines: list[dict], op: str) -> dict | None:
    return next((x for x in lines if x["op"] == op), None)


def run_writers(schedule: Schedule, run_id: str) -> list[Writer]:
    return [w for w in schedule.writers if w.run_id == run_id and w.project is None]


def _alternatives(sets: list[tuple], fold: Any) -> list[Any]:
    """``fold`` over ``(time, value, optional, who)`` in time order, once per choice of the
    optional ones (a state change a signalled writer announced but never reported)."""
    base = [x for x in sets if not x[2]]
    opts = [x for x in sets if x[2]]
    out: list[Any] = []
    for mask in range(1 << len(opts)):
        chosen = base + [o for i, o in enumerate(opts) if mask >> i & 1]
        got = fold(sorted(chosen, key=lambda x: x[0]))
        if got not in out:
            out.append(got)
    return out


def _merge_all(sets: list[tuple]) -> Any:
    out: Any = {}
    for x in sets:
        out = deep_merge(out, x[1])
    return out


def _last(sets: list[tuple]) -> Any:
    return sets[-1][1] if sets else None


def expected_multi(schedule: Schedule, run_id: str, reports: dict[str, list[dict]],
                   launches: dict[str, Launch]) -> dict[str, Any]:
    """What the server must hold of a run written from several journals (see the module doc)."""
    required: dict[tuple[str, int], float] = {}
    allowed: set[tuple[str, int]] = set()
    strings: dict[tuple[str, int], str] = {}
    strings_allowed: dict[tuple[str, int], str] = {}
    events: list[StatusEvent] = []
    configs: list[tuple[float, Any, bool, str]] = []  # (time, delta, optional, who)
    tag_inits: list[tuple[float, list[str], str]] = []
    tag_sets: list[tuple[float, Any, bool, str]] = []
    creators: list[str] = []  # run names of writers whose init() does not attach
    names: list[str] = []
    check_config = True
    by_journal: dict[str, list[Writer]] = {}
    for w in run_writers(schedule, run_id):
        lines = reports.get(w.name, [])
        launch = launches.get(w.name, Launch())
        init = _first(lines, "init")
        if not launch.started or init is None:
            continue
        by_journal.setdefault(w.journal, []).append(w)
        start = _first(lines, "start")
        at = init["t"]
        events.append(StatusEvent("RUNNING", start["t"] if start else at - 5, at,
                                  f"{w.name} in {w.journal}: init()"))
        run_name = w.run_name or w.name
        if not w.attaches:
            creators.append(run_name)
        elif w.end != "close" or launch.signalled is not None:
            # an attaching journal that ends the run (or is cut) creates it when it arrives
            # first: the server cannot rename a run afterwards (pluto-api.md), so its name is
            # that of the first create to reach it (docs/delivery.md, limits)
            names.append(run_name)
        if w.bad == "config_str":
            check_config = False
        config = huge_config() if w.bad == "huge_config" else w.config
        if config:
            configs.append((at, config, False, f"{w.name}/{w.journal} init"))
        if w.tags:
            tag_inits.append((at, sorted(w.tags), f"{w.name}/{w.journal} init"))
        steps = [x["step"] for x in lines if x["op"] == "log"]
        _worker_points(lines, required)
        for i, s in enumerate(steps):
            for n in w.names:
                required[(n, s)] = value(n, s)
            if string_step(i):
                strings.update(((n, s), text(n, s)) for n in w.strings)
        cut = launch.signalled is not None
        if cut and len(steps) < w.steps:
            first = launch.first_step if launch.first_step is not None else w.first_step
            nxt = (first + len(steps)) if w.explicit_steps else \
                (steps[-1] if steps else init["step"]) + 1
            allowed.update((n, nxt) for n in w.names)
            if string_step(len(steps)):
                strings_allowed.update(((n, nxt), text(n, nxt)) for n in w.strings)
        pending: dict | None = None
        will_end: dict | None = None
        for x in lines:
            if x["op"] == "will":
                pending = x
                if x["kind"] == "end":
                    will_end = x
            elif x["op"] == "did":
                pending = None
                if x["kind"] == "config":
                    configs.append((x["t"], x["delta"], False, f"{w.name}/{w.journal}"))
                else:
                    tag_sets.append((x["t"], sorted(x["tags"]), False, f"{w.name}/{w.journal}"))
        end = _first(lines, "end")
        if pending is not None and cut and pending["kind"] == "config":
            configs.append((pending["t"], pending["delta"], True, f"{w.name}/{w.journal}?"))
        elif pending is not None and cut and pending["kind"] == "tags":
            tag_sets.append((pending["t"], sorted(pending["tags"]), True,
                             f"{w.name}/{w.journal}?"))
        if end is not None and END_STATUS[end["how"]] is not None:
            how = end["how"]
            if how == "sigterm":
                lo, hi = launch.signalled_at or end["t"] - 5, end["t"]
            elif how == "atexit":  # reported before the SDK's atexit hook finished the run
                lo, hi = (will_end or end)["t"], launch.exited_at or end["t"] + 5
            else:
                lo, hi = (will_end or end)["t"], end["t"]
            events.append(StatusEvent(END_STATUS[how], lo, hi,
                                      f"{w.name} in {w.journal}: {_END_WORDS[how]}"))
    for journal, ws in by_journal.items():  # a journal with a SIGKILLed writer of the run,
        # none alive and no end since the run's last open there (a close() is no end)
        killed = [w for w in ws if launches[w.name].signalled == "sigkill"
                  and _first(reports.get(w.name, []), "end") is None]
        last_open = max(_first(reports[w.name], "init")["t"] for w in ws)
        ended = [w for w in ws if (e := _first(reports.get(w.name, []), "end")) is not None
                 and END_STATUS[e["how"]] is not None and e["t"] >= last_open]
        if killed and not ended:
            hi = max(launches[w.name].signalled_at or 0.0 for w in killed)
            lo = min(hi, max(_last_event_after(reports.get(w.name, [])) for w in ws))
            who = " and ".join(w.name for w in killed)
            events.append(StatusEvent(
                "FAILED", lo, hi, f"{journal}: {who} SIGKILLed, FAILED {{reason: killed}} at "
                "the run's last event there", killed=True))
    states: set[str] = set()
    winners: list[StatusEvent] = []
    if events:
        latest_lo = max(e.lo for e in events)
        winners = [e for e in events if e.hi >= latest_lo]
        states = {e.status for e in winners}
    tags: list[Any] = []
    if tag_inits:  # the run's tags at its create: the first init's (an attach sets none)
        first = min(tag_inits, key=lambda x: x[0])
        tag_sets = [(first[0], first[1], False, first[2])] + tag_sets
    if tag_sets:
        tags = _alternatives(tag_sets, _last)
    return {"required": required, "allowed": allowed, "strings": strings,
            "strings_allowed": strings_allowed, "events": events, "winners": winners,
            "states": states,
            "configs": _alternatives(configs, _merge_all) if check_config and configs else [],
            "tags": tags, "config_sets": sorted(configs, key=lambda x: x[0]),
            "tag_sets": sorted(tag_sets, key=lambda x: x[0]), "names": sorted(set(creators + names)),
            "journals": sorted(by_journal)}


def _last_event_after(lines: list[dict]) -> float:
    """A time the writer's last journaled event is surely not before: its init (the init
    itself, if it logged nothing), a record logged after init() returned (a metrics event's
    time is its first record's, up to a fold interval before the one reported), the start of
    a state change it reported done."""
    init = _first(lines, "init")
    start = _first(lines, "start")
    if init is None:
        return float("-inf")
    times = [start["t"] if start else init["t"]]
    logs = [x["t"] for x in lines if x["op"] == "log"]
    if logs:  # logged after init() had returned: later than the init event
        times += [init["t"] + 0.001, logs[-1] - SLACK_S]
    pending = None
    for x in lines:
        if x["op"] == "will":
            pending = x
        elif x["op"] == "did" and pending is not None:
            times.append(pending["t"])
    return max(times)


_END_WORDS = {"finish": "finish()", "atexit": "the script ended (atexit)",
              "fail": "finish(code=1)", "exception": "an uncaught exception",
              "sigterm": "SIGTERM"}


def server_strings(server: Any, sid: int) -> list[tuple[str, int, str]]:
    """The string-series rows the server stored for a run, one per row, duplicates kept.

    The server has no read endpoint for data records: read its SQLite file (read-only)."""
    reader = getattr(server, "data_rows", None)
    if reader is not None:
        return list(reader(sid))
    import json
    import sqlite3

    path = Path(server.data_dir) / "pluto-server.db"
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        rows = conn.execute("SELECT log_name, step, data FROM data WHERE run_id = ? AND "
                            "log_name NOT LIKE 'hist/%'", (sid,)).fetchall()
    finally:
        conn.close()
    out = []
    for name, step, data in rows:
        if isinstance(data, str) and data.startswith('"'):
            try:
                data = json.loads(data)
            except ValueError:
                pass
        out.append((name, int(step), data))
    return out


def _rel(t: float, t0: float) -> str:
    return f"+{t - t0:.2f}s"


def _explain_sets(sets: list[tuple], t0: float) -> str:
    return "; ".join(f"{who} {_short(value, 60)} at {_rel(t, t0)}"
                     for t, value, _, who in sets)


def _explain_events(exp: dict, t0: float) -> str:
    return "; ".join(f"{e.who} -> {e.status} at {_rel(e.lo, t0)}..{_rel(e.hi, t0)}"
                     for e in sorted(exp["events"], key=lambda e: e.hi))


def check_multi(schedule: Schedule, reports: dict[str, list[dict]], launches: dict[str, Launch],
                server: ServerReads, backlogs: dict[str, Any] | None,
                delivery: Delivery) -> Counts:
    c = Counts()
    t0 = delivery.t0 or min((x["t"] for lines in reports.values() for x in lines), default=0.0)
    project = schedule.project
    for why in delivery.daemon_exits:
        c.add("daemon_exits", 1, why)
    server_runs = server.list_runs(project)
    by_ext: dict[str, list[dict]] = {}
    for r in server_runs:
        by_ext.setdefault(r.get("externalId") or "", []).append(r)
    refused_at_init = {w.name for w in schedule.writers
                       if _first(reports.get(w.name, []), "refused") is not None}
    expected_ids = [r for r in schedule.runs()
                    if any(_first(reports.get(w.name, []), "init") is not None
                           for w in run_writers(schedule, r))]
    c.runs = len(server_runs)
    c.add("dup_runs", max(0, len(server_runs) - len(expected_ids)),
          f"{len(server_runs)} runs on the server ({sorted(by_ext)}), "
          f"{len(expected_ids)} created ({expected_ids})")
    for name, launch in launches.items():
        w = schedule.writer(name)
        if launch.started and launch.exit_code not in EXIT_CODES[w.end]:
            c.add("writer_errors", 1, f"{name} ({w.role} in {w.journal}, {w.end}) exited "
                  f"{launch.exit_code}: {last_words(_writer_log(reports, name))}")
        bugs = [x for x in reports.get(name, []) if x["op"] == "bug"]
        c.add("writer_errors", len(bugs), f"{name}: {bugs[:1]}")
    reaper = schedule.reaper[0] <= REAPER_S
    for run_id in expected_ids:
        exp = expected_multi(schedule, run_id, reports, launches)
        if reaper and "RUNNING" in exp["states"]:
            exp["states"].add("FAILED")  # a run left RUNNING may be reaped; no other may end so
        found = by_ext.get(run_id, [])
        if not found:
            c.add("lost", len(exp["required"]) + len(exp["strings"]) + 1,
                  f"run {run_id} (journals {' '.join(exp['journals'])}) is not on the server")
            continue
        run = found[0]
        sid = int(run["id"])
        _check_points(c, project, run_id, sid, exp, server)
        resent = sum((b or {}).get("resent", {}).get(run_id, 0)
                     for b in (backlogs or {}).values())
        before = c.resent_strings
        _check_strings(c, run_id, sid, exp, server, schedule, resent)
        _check_extras(c, schedule, run_id, sid, reports, launches, server, None,
                      backlogs, resent - (c.resent_strings - before))
        if exp["configs"] and user_config(run.get("config")) not in exp["configs"]:
            c.add("lost", 1, f"{run_id}: config {_short(user_config(run.get('config')))}, expected "
                  f"{' or '.join(_short(x) for x in exp['configs'])} (as last set by time: "
                  f"{_explain_sets(exp['config_sets'], t0)})")
        if exp["tags"] and sorted(run.get("tags") or []) not in exp["tags"]:
            c.add("lost", 1, f"{run_id}: tags {run.get('tags')}, expected "
                  f"{' or '.join(map(str, exp['tags']))} (as last set by time: "
                  f"{_explain_sets(exp['tag_sets'], t0)})")
        if exp["names"] and run.get("name") not in exp["names"]:
            c.add("conflict", 1, f"{run_id}: named {run.get('name')!r} on the server, expected "
                  f"{' or '.join(map(repr, exp['names']))} (the journal that created it "
                  "without resume=True): another journal's attach created the run")
        status = run.get("status")
        if exp["states"] and status not in exp["states"]:
            why = [e for e in exp["events"] if e.status == status]
            c.add("wrong_state", 1, (
                f"{run_id}: status {status}, expected {' or '.join(sorted(exp['states']))}: "
                f"the latest status-changing event by time is "
                f"{' / '.join(e.who for e in exp['winners'])}"
                + (f"; {status} is from the earlier {' / '.join(e.who for e in why)}"
                   if why else "") + f". Events: {_explain_events(exp, t0)}"))
        elif (not reaper and status == "FAILED" and exp["winners"]
              and all(e.killed for e in exp["winners"])):
            meta = run.get("statusMetadata")
            if not (isinstance(meta, dict) and meta.get("reason") == "killed"):
                c.add("wrong_state", 1, f"{run_id}: FAILED with statusMetadata "
                      f"{_short(meta)}, expected {{'reason': 'killed'}} "
                      f"({exp['winners'][0].who})")
    if backlogs is None or not delivery.drained:
        c.add("stuck", 1, "the drain did not finish in time")
    backlogs = backlogs or {}
    planted = {w.run_id: w for w in schedule.writers
               if w.bad == "config_str" and w.name not in refused_at_init
               and _first(reports.get(w.name, []), "init") is not None}
    recorded: set[str] = set()
    for name, b in backlogs.items():
        for run_id, n in b["pending"].items():
            c.add("stuck", n, f"{run_id}: {n} events pending in {name} after the drain")
        for run_id in b["reasserts"]:
            c.add("stuck", 1, f"{run_id}: final state not re-asserted in {name} after the drain")
        c.add("stuck", b["spills"], f"{name}: {b['spills']} spill files not folded")
        _files_backlog(c, name, b)
        for run_id, why in b.get("conflicts", {}).items():
            c.add("conflict", 1, f"{run_id}: {name} holds it as a conflict: {why}")
        for run_id, rej in b["rejected"].items():
            if run_id in planted:
                if all(reason for _, reason in rej):
                    recorded.add(run_id)
                else:
                    c.add("unrecorded", 1, f"{run_id}: rejected in {name} without a reason: {rej}")
                continue
            c.add("rejected", len(rej), f"{run_id}: {len(rej)} events rejected in {name}, "
                  f"none planted: {rej[:2]}")
    for run_id, w in planted.items():
        if run_id not in recorded and w.journal in backlogs:
            c.add("unrecorded", 1, f"{run_id} ({w.name} in {w.journal}, init(config='lr=0.1')):"
                  " the server refuses a config that is not an object, yet "
                  f"{w.journal}'s rejected table records nothing for the run")
    _check_pushes(c, schedule, reports, delivery, planted)
    return c


def _files_backlog(c: Counts, where: str, b: dict[str, Any]) -> None:
    """Files still to deliver after the drain or refused: each a failure."""
    for run_id, n in b.get("files_pending", {}).items():
        c.add("stuck", n, f"{run_id}: {n} files pending in {where} after the drain")
    for run_id, n in b.get("files_rejected", {}).items():
        c.add("rejected", n, f"{run_id}: {n} files refused by the server in {where}")
    # a file given up as lost (lost_files) is a failure only when its step was reported
    # returned: the server check (extras.check) finds it missing then
    c.add("stuck", b.get("incoming", 0), f"{where}: {b.get('incoming')} logged files never "
          "journaled (still in incoming/)")


def _check_extras(c: Counts, schedule: Schedule, run_id: str, sid: int,
                  reports: dict[str, list[dict]], launches: dict[str, Launch], server: Any,
                  backlog: dict[str, Any] | None, backlogs: dict[str, Any] | None = None,
                  resent: int | None = None) -> None:
    """Console lines, histograms, images and artifacts of the run's writers
    (tests/chaos/extras.py)."""
    writers = run_writers(schedule, run_id)
    cut = {w.name for w in writers if launches.get(w.name, Launch()).signalled is not None}
    exp = extras.expected(writers, reports, cut)
    every = [backlog] if backlog is not None else list((backlogs or {}).values())
    if resent is None:
        resent = sum((b or {}).get("resent", {}).get(run_id, 0) for b in every)
    files_resent = sum((b or {}).get("files_resent", {}).get(run_id, 0) for b in every)
    c.resent_strings += extras.check(c, run_id, sid, schedule.project, exp, server, resent,
                                     files_resent)


def _writer_log(reports: dict[str, list[dict]], name: str) -> str:
    bugs = [x for x in reports.get(name, []) if x["op"] in ("bug", "refused")]
    return str(bugs[-1]) if bugs else "(see its .log in the work dir)"


def _short(value: Any, limit: int = 160) -> str:
    text_ = repr(value)
    return text_ if len(text_) <= limit else f"{text_[:limit]}... ({len(text_)} chars)"


def _check_strings(c: Counts, run_id: str, sid: int, exp: dict, server: Any,
                   schedule: Schedule, resent: int = 0) -> None:
    """Every string-series record exactly once (the server keeps every row it is sent).

    ``resent``: records the journals counted as sent again after a request that got no answer
    (the server may have stored them: pluto-api.md gives no way to tell). Up to that many
    extra rows are the contract's at-least-once window, accounted for; any more is a failure.
    """
    if not exp["strings"] and not exp["strings_allowed"]:
        return
    counts: dict[tuple[str, int, str], int] = {}
    for row in server_strings(server, sid):
        counts[row] = counts.get(row, 0) + 1
    c.strings_checked += len(exp["strings"])
    copies = [x.name for x in schedule.exports]
    where = f" (copies {' '.join(copies)} were pushed too)" if copies else ""
    missing = [k for k, v in exp["strings"].items() if counts.get((*k, v), 0) == 0]
    c.add("lost", len(missing), f"{run_id}: string-series records missing, e.g. "
          f"{sorted(missing)[:3]}")
    twice = {k: n for k, n in counts.items() if n > 1}
    if twice and sum(n - 1 for n in twice.values()) <= resent:
        c.resent_strings += sum(n - 1 for n in twice.values())  # the contract's window
        twice = {}
    if twice:
        # requests to /ingest/data the server may have applied although the daemon saw an
        # error (it then sends them again): the at-least-once window
        risky = sorted({f"{a.fault['mode']} on {a.fault['path']}" for a in schedule.actions
                        if a.kind == "fault" and a.fault
                        and a.fault.get("mode") in ("reset", "stall")
                        and a.fault.get("path") in ("/", "/ingest/data")})
        if risky:
            where += f" (faults that can apply a data request the daemon retries: " \
                f"{', '.join(risky)})"
        c.add("dup_data", sum(n - 1 for n in twice.values()),
              f"{run_id}: {len(twice)} string-series records stored more than once{where}, "
              f"e.g. {[f'{k[0]}@{k[1]} x{n}' for k, n in sorted(twice.items())[:3]]}")
    phantom = [k for k in counts
               if exp["strings"].get(k[:2]) != k[2] and exp["strings_allowed"].get(k[:2]) != k[2]]
    c.add("phantom", len(phantom), f"{run_id}: string-series records never logged, e.g. "
          f"{sorted(phantom)[:3]}")


def _check_pushes(c: Counts, schedule: Schedule, reports: dict[str, list[dict]],
                  delivery: Delivery, planted: dict[str, Writer]) -> None:
    outcomes = {o.name: o for o in delivery.pushes}
    refusing = {w.journal for w in planted.values()}
    for p in schedule.pushes:
        o = outcomes.get(p.name)
        what = f"push {p.name} ({p.folder + '/: ' if p.folder else ''}{' '.join(p.items)}" + \
            (f" + damaged {' '.join(p.damaged)})" if p.damaged else ")")
        if o is None or not o.started:
            c.add("push_errors", 1, f"{what} never ran")
            continue
        if o.hung:
            c.add("push_errors", 1, f"{what} hung: killed after the runner's limit")
            continue
        reasons = [f"the damaged {d}" for d in p.damaged]
        reasons += [f"the refused config in {i}" for i in p.items if i in refusing]
        want = {1} if reasons else {0, 1} if o.waiting else {0}
        if crashed(o.output):
            c.add("push_errors", 1, f"{what} crashed: {last_words(o.output)}")
        if o.returncode not in want:
            c.add("push_errors", 1, f"{what} exited {o.returncode}, expected "
                  f"{' or '.join(map(str, sorted(want)))}"
                  + (f" ({', '.join(reasons)})" if reasons else " (nothing refused or damaged)")
                  + f": {last_words(o.output)}")
        flat = "".join(o.output.split())
        for d in p.damaged:
            if d not in o.output and d not in flat:
                c.add("push_errors", 1, f"{what}: its output does not name the damaged "
                      f"journal {d}")
        for item, left in o.left.items():
            if item not in o.waiting:
                c.add("push_errors", 1, f"{what} left {item} undelivered: {left}")
    for x in delivery.exports.values():
        if x.returncode != 0:
            c.add("push_errors", 1, f"export {x.name} of {x.journal} exited {x.returncode}: "
                  f"{last_words(x.output)}")
