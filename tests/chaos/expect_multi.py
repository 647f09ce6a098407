"""The oracle's expectations for one run written from several journals: every status event
with its time window, config and tags as last set by time (docs/delivery.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.chaos.outcomes import (
    SLACK_S,
    Launch,
    _first,
    _worker_points,
    deep_merge,
    run_writers,
)
from tests.chaos.schedule import END_STATUS, Schedule, Writer
from tests.chaos.trainer import huge_config, string_step, text, value


# ---------------------------------------------------------------------- multi-journal schedules
@dataclass(frozen=True)
class StatusEvent:
    """A status-changing event, its time known to ``[lo, hi]`` (epoch seconds)."""

    status: str
    lo: float
    hi: float
    who: str  # e.g. "a1 in j1: SIGTERM"
    killed: bool = False


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
