"""The chaos suite: nothing lost, nothing duplicated, the final state right, whatever happened.

- ``test_schedule``: the fast fixed set (``FAST_SEEDS``), one test per seed, in CI;
- ``test_soak``: 200 schedules (``-m slow``; ``scripts/chaos --schedules 200`` prints figures);
- the oracle's self-tests: planted losses, a planted wrong state, a planted duplicate run and
  a planted phantom point must each be counted, and a drain that cannot finish is "stuck".
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest

from tests.chaos import oracle
from tests.chaos.cli import FAST_SEEDS, summarize
from tests.chaos.runner import Ctx, Result, run_schedule
from tests.chaos.schedule import Schedule, Writer, build

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


def test_oracle_clean_run_counts_nothing(tmp_path: Path) -> None:
    r = run_schedule(_quiet("clean", end="fail"), tmp_path)
    assert r.ok, _explain(r)
    assert r.counts.points_checked == 60


def test_oracle_counts_a_drain_that_cannot_finish(tmp_path: Path) -> None:
    def server_down(ctx: Ctx) -> None:
        ctx.server.stop()

    def server_back(ctx: Ctx) -> None:
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
    assert set(exp["required"]) == {("m", 0)} and exp["allowed"] == {("m", 1)}


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
