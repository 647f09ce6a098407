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
  ``rejected`` table with a reason, or 51 tags that ``init()`` did not refuse naming the
  server's 50-tag limit;
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

from typing import Any

from tests.chaos.backlog import journal_backlog, server_strings  # noqa: F401
from tests.chaos.checks import (  # noqa: F401
    _check_extras,
    _check_points,
    _check_pushes,
    _check_strings,
    _files_backlog,
)
from tests.chaos.expect_multi import StatusEvent, expected_multi  # noqa: F401
from tests.chaos.oracle_multi import check_multi
from tests.chaos.outcomes import (  # noqa: F401
    EXIT_CODES,
    FAILURES,
    KILLED_MAY_STAY_RUNNING,
    PUSH_TIMEOUT,
    SEVERITY,
    SLACK_S,
    Counts,
    Delivery,
    ExportOutcome,
    Launch,
    PushOutcome,
    ServerReads,
    _apply_status,
    _first,
    _same,
    _worker_points,
    crashed,
    deep_merge,
    describe_backlog,
    last_words,
    push_says,
    run_writers,
)
from tests.chaos.schedule import END_STATUS, REAPER_S, Schedule, Writer
from tests.chaos.trainer import huge_config, string_step, text, value  # noqa: F401
from tests.fixtures.server import user_config


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
        # is still running, so it changes nothing; unless the trainer was killed before it
        # (a kill soon after init: seed 1016), when it reopens the run as any resume does.
        host = launches.get(w.after or "", Launch()) if w.role == "eval" else Launch()
        late = host.signalled_at is not None and host.signalled_at < init.get("t", 0.0)
        if w.role == "resume" or late:
            states = {"RUNNING"}
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


