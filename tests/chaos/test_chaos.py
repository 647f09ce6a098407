"""The chaos suite: nothing lost, nothing duplicated, the final state right, whatever happened.

- ``test_schedule``: the fast fixed set (``FAST_SEEDS``), one test per seed, in CI;
- ``test_soak``: 200 schedules (``-m slow``; ``scripts/chaos --schedules 200`` prints figures);
- the oracle's self-tests: planted losses, a planted wrong state, a planted duplicate run and
  a planted phantom point must each be counted, and a drain that cannot finish is "stuck";
  for multi-journal runs, a planted duplicate string-series record, a status other than the
  latest by time, a server run under the shared id before the creating journal arrives, a
  refusal deleted from the journal, a daemon dying, and push outcomes each count.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import pytest

from tests.chaos import oracle, oracle_multi
from tests.chaos.cli import FAST_SEEDS, MULTI_FAST, summarize
from tests.chaos.runner import Ctx, Result, run_schedule
from tests.chaos.schedule import (
    SCENARIOS,
    Damage,
    JournalPlan,
    Push,
    Schedule,
    Writer,
    build,
    build_single,
    is_multi,
)

SOAK_SEED = 1000  # docs/reliability.md records this range's figures
MIN_SOAK = 20  # fewer than this in the budget says nothing the fast set does not


def _explain(r: Result) -> str:
    return "\n".join([f"seed {r.seed} failed: " + ", ".join(
        f"{k}={getattr(r.counts, k)}" for k in oracle.FAILURES if getattr(r.counts, k)),
        *r.counts.details[:10], *r.notes,
        f"reproduce: scripts/chaos --schedules 1 --seed {r.seed}   (work dir {r.workdir})"])


@pytest.mark.parametrize("seed", FAST_SEEDS)
def test_schedule(seed: int, tmp_path: Path) -> None:
    r = run_schedule(build(seed), tmp_path / f"seed-{seed}")
    assert r.ok, _explain(r)
    assert r.counts.runs == len(build(seed).runs())


@pytest.mark.slow
@pytest.mark.timeout(0)  # bounded by CHAOS_SOAK_BUDGET and .ci/run's timeout, not per test
def test_soak(tmp_path: Path) -> None:
    # ~6 s per schedule on 2 cores. CHAOS_SOAK_SCHEDULES sets how many; CHAOS_SOAK_BUDGET
    # (seconds) stops starting new ones once spent, so a slow CI machine runs fewer, not none.
    n = int(os.environ.get("CHAOS_SOAK_SCHEDULES", "200"))
    budget = float(os.environ.get("CHAOS_SOAK_BUDGET", "inf"))
    t0 = time.monotonic()
    results = []
    for seed in range(SOAK_SEED, SOAK_SEED + n):
        if time.monotonic() - t0 > budget:
            break
        results.append(run_schedule(build(seed), tmp_path / f"seed-{seed}"))
    total = summarize(results, time.monotonic() - t0)
    print(f"soak: {len(results)} of {n} schedules in {total['seconds']} s")
    failed = [r for r in results if not r.ok]
    assert not failed, f"{total}\n" + "\n\n".join(_explain(r) for r in failed[:5])
    assert len(results) >= min(n, MIN_SOAK), (
        f"only {len(results)} schedules fit in CHAOS_SOAK_BUDGET={budget:g} s; "
        f"raise the budget or lower CHAOS_SOAK_SCHEDULES")


# ---------------------------------------------------------------------- the oracle can fail
def _quiet(name: str, end: str = "finish") -> Schedule:
    """One trainer, no faults, and no daemon until the drain: the journal holds everything."""
    w = Writer(name="t0", role="trainer", run_id=f"{name}-r0", end=end, steps=30,
               names=("train/loss", "train/acc"), interval=0.005, config={"lr": 1},
               tags=("plant",))
    return Schedule(seed=0, project=name, writers=(w,), actions=(), daemon_from_start=False)


def _delete_metrics_event(ctx: Ctx) -> None:
    conn = sqlite3.connect(ctx.journal_dir / "journal.db")
    with conn:
        n = conn.execute("DELETE FROM events WHERE seq = (SELECT min(seq) FROM events "
                         "WHERE kind = 'metrics')").rowcount
    conn.close()
    assert n == 1


def _tamper_server(ctx: Ctx) -> None:
    s = ctx.server
    run = next(r for r in s.list_runs(ctx.schedule.project) if r["externalId"] == "plant-r0")
    ok = {"runId": run["id"]}
    assert s.request("POST", "/api/runs/status/update", json={**ok, "status": "FAILED"}).ok
    assert s.request("POST", "/api/runs/config/update",
                     json={**ok, "config": '{"lr": 2}'}).ok
    s.create_run(ctx.schedule.project, "intruder", externalId="intruder")
    line = {"time": 1, "step": 99_999, "data": {"train/loss": 1.0}}
    assert s.ingest("metrics", run["id"], ctx.schedule.project, [line]).ok


def test_oracle_counts_planted_faults(tmp_path: Path) -> None:
    r = run_schedule(_quiet("plant"), tmp_path, before_drain=_delete_metrics_event,
                     after_drain=_tamper_server)
    c = r.counts
    assert c.lost >= 2 + 1, c.details  # the deleted event's points (2 names), and the config
    assert (c.wrong_state, c.dup_runs, c.phantom) == (1, 1, 1), c.details
    assert (c.stuck, c.rejected, c.writer_errors) == (0, 0, 0), c.details


def _delete_extras(ctx: Ctx) -> None:
    """Before the drain: one console line and one image row gone from the journal (a line
    out of its event: the helper may have journaled all of them in one)."""
    conn = sqlite3.connect(ctx.journal_dir / "journal.db")
    with conn:
        seq, payload = conn.execute("SELECT seq, payload FROM events WHERE kind = 'logs' "
                                    "ORDER BY seq LIMIT 1").fetchone()
        rest = payload.split("\n")[1:]
        assert rest, "one line only: nothing would be left to tamper with"
        conn.execute("UPDATE events SET payload = ? WHERE seq = ?", ("\n".join(rest), seq))
        assert conn.execute("DELETE FROM files WHERE id = (SELECT min(id) FROM files "
                            "WHERE log_name LIKE 'samples/%')").rowcount == 1
    conn.close()


def _tamper_extras(ctx: Ctx) -> None:
    """After the drain: a histogram row sent twice, one at a step never logged, one again with
    other counts; a console line twice; an image presigned twice, another's bytes replaced."""
    s = ctx.server
    run = next(r for r in s.list_runs(ctx.schedule.project) if r["externalId"] == "extras-r0")
    data = s.request("GET", "/api/runs/data", params={
        "runId": run["id"], "projectName": ctx.schedule.project}).json()["data"]
    hist = next(d for d in data if d["logName"] == "hist/t0")
    twice = {k: hist[k] for k in ("time", "step", "dataType", "logName", "data")}
    other = {**twice, "step": hist["step"] + 1000}  # a step never logged
    h2 = [d for d in data if d["logName"] == "hist/t0"][1]
    wrong = {**{k: h2[k] for k in twice}, "data": json.dumps({"freq": [1], "shape": "x"})}
    assert s.ingest("data", run["id"], ctx.schedule.project, [twice, other, wrong]).ok
    logs = s.logs(run["id"], ctx.schedule.project)
    line = next(x for x in logs if "chaos-line" in x["message"])
    again = {"time": 1, "message": line["message"], "lineNumber": line["lineNumber"],
             "logType": line["logType"]}
    assert s.ingest("logs", run["id"], ctx.schedule.project, [again]).ok
    # an image presigned twice (a second row, the same object), another's bytes replaced
    project = ctx.schedule.project
    files = s.request("GET", "/api/runs/files", params={
        "runId": run["id"], "projectName": project}).json()["files"]
    images = sorted((f for f in files if f["logName"].startswith("samples/")),
                    key=lambda f: f["caption"])
    twice_f = images[0]
    assert s.request("POST", "/files", json={"files": [{
        **{k: twice_f[k] for k in ("fileName", "logName", "fileSize", "fileType", "step",
                                   "caption")}, "time": 1, "sampleIndex": 0}]},
        headers={"X-Run-Id": str(run["id"]), "X-Project-Name": project}).ok

    def obj(f: dict) -> Path:
        key = f"{project}/{run['id']}/{f['logName']}/{f['fileName']}"
        return s.data_dir / "objects" / hashlib.sha256(key.encode()).hexdigest()

    obj(images[1]).write_bytes(obj(images[2]).read_bytes())


def test_oracle_counts_lost_and_duplicated_extras(tmp_path: Path) -> None:
    from dataclasses import replace

    sched = _quiet("extras")
    sched = replace(sched, writers=(replace(sched.writers[0], extras=("print", "hist", "image")),))
    r = run_schedule(sched, tmp_path, before_drain=_delete_extras, after_drain=_tamper_extras)
    c = r.counts
    assert c.lines_checked == 15 and c.rows_checked == 10 and c.files_checked == 12, c
    assert c.lost >= 2, c.details  # the lines of the deleted event, the deleted image
    assert any("console lines missing" in d for d in c.details), c.details
    assert any("images missing" in d for d in c.details), c.details
    # two rows, a line and an image twice; a step never logged; other counts, other pixels
    assert (c.dup_data, c.phantom, c.mismatched) == (4, 1, 2), c.details
    assert any("files whose bytes differ" in d for d in c.details), c.details


def test_oracle_clean_run_counts_nothing(tmp_path: Path) -> None:
    r = run_schedule(_quiet("clean", end="fail"), tmp_path)
    assert r.ok, _explain(r)
    assert r.counts.points_checked == 60


def test_oracle_counts_a_drain_that_cannot_finish(tmp_path: Path) -> None:
    def server_down(ctx: Ctx) -> None:
        ctx.server.stop()

    def server_back(ctx: Ctx) -> None:
        for d in ctx.daemons.values():  # nothing delivered behind the oracle's back
            d.kill()
        ctx.server.start()

    r = run_schedule(_quiet("stuck"), tmp_path, before_drain=server_down,
                     after_drain=server_back, drain_timeout=3.0)
    assert r.drain_seconds is None
    assert r.counts.stuck >= 1 and r.counts.lost >= 1, r.counts.details


# ---------------------------------------------------------------------- expectations (pure)
def _w(name: str, role: str, end: str) -> Writer:
    return Writer(name=name, role=role, run_id="r", end=end, steps=10, names=("m",),
                  interval=0.0)


def test_expected_state_of_a_kill_after_an_announced_change() -> None:
    lines = [{"op": "init", "step": 0, "config": {"a": 1}, "tags": ["x"]},
             {"op": "log", "step": 0}, {"op": "will", "kind": "config", "delta": {"a": 2}}]
    exp = oracle.expected_run([_w("t0", "trainer", "sigkill")], {"t0": lines},
                              {"t0": oracle.Launch(started=True, signalled="sigkill")})
    assert exp["configs"] == [{"a": 1}, {"a": 2}]
    assert exp["states"] == {"FAILED"}  # plutosync reports the dead writer: FAILED killed
    # ... also when an eval job attached to the run close()d after the kill (no end)
    launches = {"t0": oracle.Launch(started=True, signalled="sigkill", exited_at=10.0),
                "e0": oracle.Launch(started=True, exited_at=10.2)}
    exp = oracle.expected_run([_w("t0", "trainer", "sigkill"), _w("e0", "eval", "close")],
                              {"t0": lines, "e0": lines[:1]}, launches)
    assert exp["states"] == {"FAILED"}
    assert set(exp["required"]) == {("m", 0)} and exp["allowed"] == {("m", 1)}


def test_expected_state_of_an_eval_attaching_after_its_trainer_was_killed() -> None:
    t0 = [{"op": "init", "t": 1.0, "step": 0, "config": {}, "tags": []}, {"op": "log", "step": 0}]
    e0 = [{"op": "init", "t": 5.0, "step": 1, "config": {}, "tags": []},
          {"op": "end", "t": 6.0, "how": "close"}]
    eval_ = replace(_w("e0", "eval", "close"), after="t0")
    for killed_at, states in ((3.0, {"RUNNING"}), (8.0, {"FAILED"})):
        launches = {"t0": oracle.Launch(started=True, signalled="sigkill",
                                        signalled_at=killed_at),
                    "e0": oracle.Launch(started=True)}
        exp = oracle.expected_run([_w("t0", "trainer", "sigkill"), eval_],
                                  {"t0": t0, "e0": e0}, launches)
        # killed before the eval's init: its resume reopened the run (seed 1016)
        assert exp["states"] == states, killed_at


def test_expected_state_follows_severity_and_resumes() -> None:
    t0 = [{"op": "init", "step": 0, "config": {}, "tags": []}, {"op": "end", "how": "fail"}]
    s0 = [{"op": "init", "step": 5, "config": {}, "tags": []}, {"op": "end", "how": "close"}]
    launches = {"t0": oracle.Launch(started=True), "s0": oracle.Launch(started=True)}
    exp = oracle.expected_run([_w("t0", "trainer", "fail")], {"t0": t0}, launches)
    assert exp["states"] == {"FAILED"}
    exp = oracle.expected_run([_w("t0", "trainer", "fail"), _w("s0", "resume", "close")],
                              {"t0": t0, "s0": s0}, launches)
    assert exp["states"] == {"RUNNING"}  # the resume reopened it; close() changes nothing
    assert oracle._apply_status("FAILED", "COMPLETED") == "FAILED"


def test_expected_state_of_a_sigterm_during_a_state_change() -> None:
    # seed 1040: SIGTERM between "will" and "did": the SDK may finish the change first
    lines = [{"op": "init", "step": 0, "config": {"a": 1}, "tags": []}, {"op": "log", "step": 0},
             {"op": "will", "kind": "config", "delta": {"b": 2}}, {"op": "end", "how": "sigterm"}]
    exp = oracle.expected_run([_w("t0", "trainer", "sigterm")], {"t0": lines},
                              {"t0": oracle.Launch(started=True, signalled="sigterm")})
    assert exp["configs"] == [{"a": 1}, {"a": 1, "b": 2}]
    assert exp["states"] == {"TERMINATED"} and exp["allowed"] == {("m", 1)}


# ---------------------------------------------------------------------- multi-journal schedules
def test_multi_journal_schedules_are_a_third_and_leave_single_ones_alone() -> None:
    seeds = range(1000, 1200)
    multi = [s for s in seeds if is_multi(s)]
    assert 0.25 * len(seeds) < len(multi) < 0.45 * len(seeds)
    assert {build(s).scenario for s in multi} == set(SCENARIOS)
    for s in seeds:
        b = build(s)
        assert b == build(s)  # pure
        assert b.multi == is_multi(s)
        if not b.multi:
            assert b == build_single(s)
    for s in FAST_SEEDS:
        assert build(s).multi == (s in MULTI_FAST)


def test_multi_journal_schedules_are_well_formed() -> None:
    for s in (s for s in range(1000, 1400) if is_multi(s)):
        b = build(s)
        shared = [w for w in b.writers if w.run_id == b.shared]
        assert 2 <= len({w.journal for w in shared}) <= 4 or b.scenario == "export", b.notes
        assert b.runs()[0] == b.shared
        pushed = [i for p in b.pushes for i in p.items]
        assert sorted(pushed) == sorted(
            [j.name for j in b.journals if j.delivery == "push"] + [x.name for x in b.exports])
        if b.scenario == "allocs":
            allocs = [w for w in b.writers if w.role == "alloc"]
            assert allocs[-1].end == "finish" and all(w.explicit_steps for w in allocs)
        for d in b.damages:
            assert any(d.name in p.damaged and d.path.startswith(f"{p.folder}/")
                       for p in b.pushes)


def _alloc(name: str, journal: str, end: str, resume: bool, after: str | None = None,
           **kw: object) -> Writer:
    return Writer(name=name, role="alloc", run_id="plant-shared", end=end, steps=12,
                  names=("train/loss",), interval=0.003, explicit_steps=True,
                  config={"job": "slurm"}, tags=("slurm",), journal=journal, resume=resume,
                  after=after, strings=(f"note/{name}",), **kw)  # type: ignore[arg-type]


def _quiet_multi(name: str, deliveries: tuple[str, str] = ("push", "push"),
                 extra: tuple[Writer, ...] = (), pushes: tuple[Push, ...] | None = None,
                 damages: tuple[Damage, ...] = ()) -> Schedule:
    """Two allocations one after the other (a0 in j0, a1 in j1 resuming), no faults."""
    writers = (_alloc("a0", "j0", "finish", False), _alloc("a1", "j1", "finish", True, "a0"))
    journals = tuple(JournalPlan(j, f"nodes/{j}", d, 1e6 if d == "live" else None)
                     for j, d in zip(("j0", "j1"), deliveries, strict=True))
    if pushes is None:
        pushes = tuple(Push(f"p{i}", (j.name,)) for i, j in enumerate(journals)
                       if j.delivery == "push")
    return Schedule(seed=0, project=name, writers=writers + extra, actions=(),
                    journals=journals, pushes=pushes, damages=damages,
                    shared="plant-shared", scenario="allocs")


def test_oracle_clean_multi_journal_run_counts_nothing(tmp_path: Path) -> None:
    r = run_schedule(_quiet_multi("mclean"), tmp_path)
    assert r.ok, _explain(r)
    assert r.counts.points_checked == 24 and r.counts.strings_checked == 6


def _tamper_shared(ctx: Ctx) -> None:
    s = ctx.server
    run = next(r for r in s.list_runs(ctx.schedule.project) if r["externalId"] == "plant-shared")
    # a status other than the latest by time (a1's finish): TERMINATED outranks COMPLETED
    assert s.request("POST", "/api/runs/status/update",
                     json={"runId": run["id"], "status": "TERMINATED"}).ok
    line = {"time": 1, "step": 0, "data": "note/a0@0", "dataType": "string-series",
            "logName": "note/a0"}
    assert s.ingest("data", run["id"], ctx.schedule.project, [line]).ok  # a record twice
    assert s.ingest("data", run["id"], ctx.schedule.project,
                    [{**line, "data": "never logged", "step": 1}]).ok


def test_oracle_counts_planted_multi_journal_faults(tmp_path: Path) -> None:
    r = run_schedule(_quiet_multi("mplant"), tmp_path, after_drain=_tamper_shared)
    c = r.counts
    assert (c.wrong_state, c.dup_data, c.phantom) == (1, 1, 1), c.details
    why = next(d for d in c.details if d.startswith("wrong_state"))
    assert "expected COMPLETED" in why and "a1 in j1: finish()" in why, why


def test_oracle_counts_a_run_created_by_someone_else_first(tmp_path: Path) -> None:
    # both journals delivered live, their daemons held off until the drain; by then the server
    # holds another run under the shared id: a conflict, whatever the daemons do
    def intruder(ctx: Ctx) -> None:
        ctx.server.create_run(ctx.schedule.project, "intruder", externalId="plant-shared")

    r = run_schedule(_quiet_multi("mconf", ("live", "live")), tmp_path,
                     before_drain=intruder, drain_timeout=8.0)
    assert r.counts.conflict >= 1, r.counts.details
    assert any("named 'intruder'" in d for d in r.counts.details), r.counts.details


def test_oracle_counts_a_refusal_not_recorded(tmp_path: Path) -> None:
    bad = Writer(name="b0", role="trainer", run_id="plant-bad0", end="finish", steps=5,
                 names=("train/loss",), interval=0.003, journal="j0", bad="config_str")

    def forget(ctx: Ctx) -> None:
        conn = sqlite3.connect(ctx.journals["j0"] / "journal.db")
        with conn:
            conn.execute("DELETE FROM rejected")
        conn.close()

    r = run_schedule(_quiet_multi("mrej", ("live", "live"), extra=(bad,)), tmp_path,
                     after_drain=forget, drain_timeout=8.0)
    assert r.counts.unrecorded == 1, r.counts.details
    assert any("init(config='lr=0.1')" in d for d in r.counts.details if "unrecorded" in d)


def test_oracle_counts_51_tags_that_init_accepted() -> None:
    bad = Writer(name="b0", role="trainer", run_id="plant-bad0", end="finish", steps=5,
                 names=("train/loss",), interval=0.003, journal="j0", bad="too_many_tags")
    s = replace(_quiet_multi("t"), writers=(bad,))
    refused = {"b0": _lines(("start", 1.0, {}), ("refused", 1.1, {
        "error": "ValueError: init(): a run can have at most 50 tags (the Pluto server's "
                 "limit), this would give it 51; ..."}))}
    accepted = {"b0": _lines(("start", 1.0, {}), ("init", 1.1, {"step": 0}))}
    for reports, want in ((refused, 0), (accepted, 1), ({}, 0)):  # {}: never started
        c = oracle.Counts()
        oracle_multi.check_tag_limit(c, s, reports)
        assert c.unrecorded == want, c.details
        assert all("it returned a run" in d for d in c.details), c.details


def test_oracle_counts_a_daemon_that_dies(tmp_path: Path) -> None:
    def die(ctx: Ctx) -> None:  # not through DaemonProc.kill: as if it crashed
        d = ctx.daemons["j0"]
        d.start()
        assert d.proc is not None
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(10)

    r = run_schedule(_quiet_multi("mdie", ("live", "push")), tmp_path, before_drain=die)
    assert r.counts.daemon_exits == 1, r.counts.details
    assert "exited -9 by itself" in r.counts.details[0]


def test_oracle_checks_push_outcomes() -> None:
    s = _quiet_multi("x", pushes=(Push("p0", ("j0",), "push-0", damaged=("bad-empty",)),
                                  Push("p1", ("j1",)), Push("p2", ("j1",))))
    crash = "Traceback (most recent call last):\n  File \"x\"\nValueError: boom\n"
    logged = "  ERROR  unexpected\n    Traceback (most recent call last):\n  boom\neverything"
    delivery = oracle.Delivery(pushes=[
        oracle.PushOutcome("p0", ("j0",), "push-0", ("bad-empty",), True, 0, "all good"),
        oracle.PushOutcome("p1", ("j1",), None, (), True, 1, crash,
                           left={"j1": "3 events of plant-shared pending"}),
    ])
    c = oracle.Counts()
    oracle._check_pushes(c, s, {}, delivery, {})
    text = "\n".join(c.details)
    assert c.push_errors == 6, text  # p0: exit 0, bad-empty not named; p1: crash, exit 1,
    assert "expected 1 (the damaged bad-empty)" in text  # left j1; p2: never ran
    assert "does not name the damaged journal bad-empty" in text
    assert "traceback: ValueError: boom" in text and "p2 (j1) never ran" in text
    assert not oracle.crashed(logged) and oracle.crashed(crash)


def _lines(*ops: tuple) -> list[dict]:
    return [{"op": op, "t": t, **kw} for op, t, kw in ops]


def test_expected_status_is_the_latest_by_time_across_journals() -> None:
    a0 = _alloc("a0", "j0", "sigterm", False, signal_after=0.1)
    a1 = _alloc("a1", "j1", "finish", True, "a0")
    s = replace(_quiet_multi("t"), writers=(a0, a1))
    init = {"step": 0, "config": {}, "tags": []}
    reports = {
        "a0": _lines(("start", 10.0, {}), ("init", 10.1, init), ("log", 10.2, {"step": 0}),
                     ("end", 10.6, {"how": "sigterm"})),
        "a1": _lines(("start", 11.0, {}), ("init", 11.1, init), ("log", 11.2, {"step": 1}),
                     ("will", 11.3, {"kind": "end", "how": "finish"}),
                     ("end", 11.4, {"how": "finish"})),
    }
    launches = {"a0": oracle.Launch(started=True, signalled="sigterm", signalled_at=10.5,
                                    exited_at=10.7),
                "a1": oracle.Launch(started=True, exited_at=11.5, first_step=1)}
    exp = oracle.expected_multi(s, "plant-shared", reports, launches)
    assert exp["states"] == {"COMPLETED"}, exp["events"]
    # a1 resumed but ended the run: delivered first, its create names the run (the server
    # cannot rename it); a journal that only attached (close()) never does
    assert exp["names"] == ["a0", "a1"]
    closing = replace(a1, end="close")
    exp = oracle.expected_multi(replace(s, writers=(a0, closing)), "plant-shared", reports,
                                launches)
    assert exp["names"] == ["a0"]
    # the later allocation SIGKILLed instead: FAILED, reason killed, at its last event
    reports["a1"] = reports["a1"][:3]
    launches["a1"] = oracle.Launch(started=True, signalled="sigkill", signalled_at=11.6,
                                   exited_at=11.7, first_step=1)
    exp = oracle.expected_multi(s, "plant-shared", reports, launches)
    assert exp["states"] == {"FAILED"} and exp["winners"][0].killed
    # ... killed so soon after its init that either may be the later event: both accepted
    reports["a1"] = reports["a1"][:2]
    launches["a1"] = oracle.Launch(started=True, signalled="sigkill", signalled_at=11.12,
                                   exited_at=11.2, first_step=1)
    exp = oracle.expected_multi(s, "plant-shared", reports, launches)
    assert exp["states"] == {"FAILED", "RUNNING"}


def test_a_cut_allocation_may_have_printed_the_line_of_its_next_step() -> None:
    """An allocation continues where the previous one stopped (its launch's first step, not
    the schedule's): signalled between print() and the report, its next step's console line
    is allowed, and a line past it is still a phantom (seed 1064)."""
    from tests.chaos import checks, extras

    a0 = _alloc("a0", "j0", "sigterm", False, extras=("print",))
    a1 = _alloc("a1", "j1", "sigterm", True, "a0", extras=("print",))
    init = {"step": 0, "config": {}, "tags": []}
    reports = {"a0": _lines(("init", 1.0, init), ("log", 1.1, {"step": 0})),
               "a1": _lines(("init", 2.0, init), ("log", 2.1, {"step": 120}),
                            ("log", 2.2, {"step": 121}))}
    launches = {"a0": oracle.Launch(started=True, signalled="sigterm"),
                "a1": oracle.Launch(started=True, signalled="sigterm", first_step=120)}
    exp = extras.expected([a0, a1], reports, checks.cut_writers([a0, a1], launches))
    assert set(exp["required"]["print"]) == {extras.line("a0", 0), extras.line("a1", 120)}
    assert set(exp["allowed"]["print"]) == {extras.line("a1", 122)}  # index 2 prints; a0's 1 not
    launches["a1"] = oracle.Launch(started=True, first_step=120)  # not signalled: nothing more
    exp = extras.expected([a0, a1], reports, checks.cut_writers([a0, a1], launches))
    assert set(exp["allowed"]["print"]) == set()
