"""The oracle's checks of one run on the server (points, strings, extras, files left) and of
the scheduled pushes, shared by single- and multi-journal schedules."""

from __future__ import annotations

from typing import Any

from tests.chaos import extras
from tests.chaos.backlog import server_strings
from tests.chaos.outcomes import (
    PUSH_TIMEOUT,
    TRANSIENT_WORDS,
    Counts,
    Delivery,
    Launch,
    ServerReads,
    _same,
    crashed,
    last_words,
    run_writers,
)
from tests.chaos.schedule import Schedule, Writer


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


def cut_writers(writers: list[Any], launches: dict[str, Launch]) -> dict[str, int]:
    """The writers signalled (possibly between a log() and its report), each with its first
    explicit step: for an allocation, where the previous one stopped (seed 1064 allowed the
    wrong step for a cut allocation's last console line)."""
    cut = {}
    for w in writers:
        launch = launches.get(w.name, Launch())
        if launch.signalled is not None:
            cut[w.name] = w.first_step if launch.first_step is None else launch.first_step
    return cut


def _check_extras(c: Counts, schedule: Schedule, run_id: str, sid: int,
                  reports: dict[str, list[dict]], launches: dict[str, Launch], server: Any,
                  backlog: dict[str, Any] | None, backlogs: dict[str, Any] | None = None,
                  resent: int | None = None) -> None:
    """Console lines, histograms, images and artifacts of the run's writers
    (tests/chaos/extras.py)."""
    writers = run_writers(schedule, run_id)
    exp = extras.expected(writers, reports, cut_writers(writers, launches))
    every = [backlog] if backlog is not None else list((backlogs or {}).values())
    if resent is None:
        resent = sum((b or {}).get("resent", {}).get(run_id, 0) for b in every)
    files_resent = sum((b or {}).get("files_resent", {}).get(run_id, 0) for b in every)
    c.resent_strings += extras.check(c, run_id, sid, schedule.project, exp, server, resent,
                                     files_resent)


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
        # its --timeout spent retrying faults that kept firing (the drain delivers the rest)
        gave_up = o.seconds >= PUSH_TIMEOUT - 1 and "left to deliver" in o.output and any(
            t in o.output for t in TRANSIENT_WORDS)
        if gave_up:
            c.pushes_timed_out += 1
        want = {1} if reasons else {0, 1} if o.waiting or gave_up else {0}
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
            if item not in o.waiting and not gave_up:
                c.add("push_errors", 1, f"{what} left {item} undelivered: {left}")
    for x in delivery.exports.values():
        if x.returncode != 0:
            c.add("push_errors", 1, f"export {x.name} of {x.journal} exited {x.returncode}: "
                  f"{last_words(x.output)}")


def _writer_log(reports: dict[str, list[dict]], name: str) -> str:
    bugs = [x for x in reports.get(name, []) if x["op"] in ("bug", "refused")]
    return str(bugs[-1]) if bugs else "(see its .log in the work dir)"


def _rel(t: float, t0: float) -> str:
    return f"+{t - t0:.2f}s"


def _explain_sets(sets: list[tuple], t0: float) -> str:
    return "; ".join(f"{who} {_short(value, 60)} at {_rel(t, t0)}"
                     for t, value, _, who in sets)


def _explain_events(exp: dict, t0: float) -> str:
    return "; ".join(f"{e.who} -> {e.status} at {_rel(e.lo, t0)}..{_rel(e.hi, t0)}"
                     for e in sorted(exp["events"], key=lambda e: e.hi))
