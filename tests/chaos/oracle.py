"""The oracle: what the trainers reported as returned vs what the server holds, as counts.

Failure classes (each must be 0):

- ``lost``: a reported metric point missing or with the wrong value, a logged metric name the
  server does not list, config or tags not as last set, a run missing from the server;
- ``phantom``: a metric point on the server that was never logged;
- ``dup_points``: more metric rows than distinct (name, step) pairs;
- ``dup_runs``: more runs in the project than the schedule created;
- ``wrong_state``: a final status (or fork link) other than the table in ``schedule.END_STATUS``
  (where the server's reaper bites, a run left RUNNING may also be FAILED: nothing else);
- ``stuck``: events still pending, or spill files not folded, after the drain (or no drain);
- ``rejected``: events the daemon recorded as refused for good (every fault is transient);
- ``writer_errors``: a workload process that exited in a way its plan does not explain.

A writer killed (SIGKILL/SIGTERM) between a call's return and its report may have done one more
thing than it reported: the next step, its last announced (``will``) state change. Both outcomes
are accepted for it; nothing else is.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tests.chaos.schedule import END_STATUS, REAPER_S, Schedule, Writer
from tests.chaos.trainer import value

SEVERITY = {"COMPLETED": 1, "TERMINATED": 2, "CANCELLED": 3, "FAILED": 4}
FAILURES = ("lost", "phantom", "dup_points", "dup_runs", "wrong_state", "stuck", "rejected",
            "writer_errors")
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
    # figures, not failures
    points_checked: int = 0
    absorbed_duplicates: int = 0  # replays the server deduplicated (received - stored)
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
            states = {_apply_status(s, "FAILED") for s in states}
    return {"required": required, "allowed": allowed, "configs": configs, "tags": tags,
            "states": states}


def check(schedule: Schedule, reports: dict[str, list[dict]], launches: dict[str, Launch],
          server: ServerReads, backlog: dict[str, Any] | None) -> Counts:
    """Compare; ``backlog`` is :func:`journal_backlog` after the drain (None: no drain)."""
    c = Counts()
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
        _check_run(c, schedule, run_id, found[0], exp, server, launches, by_ext)
    if backlog is None:
        c.add("stuck", 1, "the drain did not finish in time")
    else:
        for run_id, n in backlog["pending"].items():
            c.add("stuck", n, f"{run_id}: {n} events pending after the drain")
        for run_id in backlog["reasserts"]:
            c.add("stuck", 1, f"{run_id}: final state not re-asserted after the drain")
        c.add("stuck", backlog["spills"], f"{backlog['spills']} spill files not folded")
        for run_id, rej in backlog["rejected"].items():
            c.add("rejected", len(rej), f"{run_id}: {rej[:2]}")
    return c


def _opener(schedule: Schedule, run_id: str) -> str:
    return next(w.name for w in schedule.writers
                if w.run_id == run_id and w.role in ("trainer", "fork"))


def _check_run(c: Counts, schedule: Schedule, run_id: str, run: dict, exp: dict,
               server: ServerReads, launches: dict[str, Launch],
               by_ext: dict[str, list[dict]]) -> None:
    sid = int(run["id"])
    names = {n for n, _ in exp["required"]} | {n for n, _ in exp["allowed"]}
    rows: list[dict] = []
    for n in sorted(names):
        rows += server.metrics(sid, schedule.project, n)
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
    listed = set(server.metric_names(schedule.project, sid))
    missing = {n for n, _ in exp["required"]} - listed
    c.add("lost", len(missing), f"{run_id}: metric names not registered {sorted(missing)}")
    if exp["configs"] and run.get("config") not in exp["configs"]:
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


def _same(got: Any, want: float) -> bool:
    try:
        return math.isclose(float(got), want, rel_tol=1e-9, abs_tol=1e-9)
    except (TypeError, ValueError):
        return False


def journal_backlog(journal_dir: Path) -> dict[str, Any]:
    """Pending events per run, runs whose final state is still to be re-asserted (due time),
    rejected events, and unfolded spill files, read-only."""
    from pluto_offline import journal as J
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
        for row in J.all_runs(j):
            rej = J.rejected_events(j, row.key)
            if rej:
                rejected[row.run_id] = [(r.get("kind"), r.get("reason")) for r in rej]
    finally:
        j.close()
    return {"pending": pending, "reasserts": reasserts, "rejected": rejected, "spills": spills}
