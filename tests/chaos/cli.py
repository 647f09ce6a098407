"""``scripts/chaos``: run schedules ``seed .. seed+N-1``, print figures, exit 1 on a failure."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from tests.chaos.oracle import FAILURES
from tests.chaos.runner import Result, run_schedule
from tests.chaos.schedule import build

FAST_SEEDS = range(1, 21)  # the CI set: test_chaos.py runs these


def summarize(results: list[Result], seconds: float) -> dict:
    """Totals over schedules: failures per class, figures, what the chaos did."""
    total: dict = {"schedules": len(results), "failed": sum(not r.ok for r in results),
                   "seconds": round(seconds, 1)}
    for k in FAILURES:
        total[k] = sum(getattr(r.counts, k) for r in results)
    for k in ("points_checked", "absorbed_duplicates", "runs"):
        total[k] = sum(getattr(r.counts, k) for r in results)
    total["faults_fired"] = sum(r.faults_fired for r in results)
    chaos: dict[str, int] = {}
    for r in results:
        for k, v in r.events.items():
            chaos[k] = chaos.get(k, 0) + v
    total["chaos"] = dict(sorted(chaos.items()))
    drains = sorted(r.drain_seconds for r in results if r.drain_seconds is not None)
    total["drain_s_median"] = drains[len(drains) // 2] if drains else None
    total["drain_s_max"] = drains[-1] if drains else None
    total["failed_seeds"] = [r.seed for r in results if not r.ok]
    return total


def line(r: Result) -> str:
    c = r.counts
    bad = " ".join(f"{k}={getattr(c, k)}" for k in FAILURES if getattr(c, k))
    return (f"seed {r.seed:>6}  {'ok  ' if r.ok else 'FAIL'}  {r.seconds:5.1f}s  "
            f"drain {'-' if r.drain_seconds is None else f'{r.drain_seconds:.1f}s':>6}  "
            f"runs {c.runs}  points {c.points_checked:>4}  absorbed {c.absorbed_duplicates:>3}  "
            f"faults {r.faults_fired:>2}  {bad or '; '.join(r.notes)}")


def table(total: dict) -> str:
    rows = [("schedules", total["schedules"]), ("failed schedules", total["failed"])]
    rows += [(k, total[k]) for k in FAILURES]
    rows += [("runs checked", total["runs"]), ("metric points checked", total["points_checked"]),
             ("replays absorbed by the server", total["absorbed_duplicates"]),
             ("faults fired", total["faults_fired"])]
    rows += [(k, v) for k, v in total["chaos"].items()]
    rows += [("drain median / max (s)", f"{total['drain_s_median']} / {total['drain_s_max']}"),
             ("wall time (s)", total["seconds"])]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/chaos", description=__doc__)
    p.add_argument("--schedules", type=int, default=len(FAST_SEEDS), metavar="N")
    p.add_argument("--seed", type=int, default=FAST_SEEDS[0], metavar="S",
                   help="the first schedule's seed; the others follow (S+1, S+2, ...)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="keep every schedule's processes' logs and reports here")
    p.add_argument("--discard-failed", action="store_true",
                   help="delete the work directory of failing schedules too (by default it is "
                        "kept, and its path printed, for its logs and journal)")
    p.add_argument("-v", "--verbose", action="store_true", help="print each failure's details")
    args = p.parse_args(argv)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="pluto-chaos-"))
    results: list[Result] = []
    t0 = time.monotonic()
    for seed in range(args.seed, args.seed + args.schedules):
        try:
            r = run_schedule(build(seed), root / f"seed-{seed}")
        except KeyboardInterrupt:  # Ctrl-C: the figures of the schedules that completed
            print(f"interrupted: {len(results)} of {args.schedules} schedules completed")
            break
        results.append(r)
        print(line(r), flush=True)
        if not r.ok:
            for d in r.counts.details[: None if args.verbose else 5]:
                print(f"      {d}", flush=True)
            print(f"      reproduce: scripts/chaos --schedules 1 --seed {seed}", flush=True)
        if args.workdir is None and (r.ok or args.discard_failed):
            shutil.rmtree(r.workdir, ignore_errors=True)
        elif not r.ok:
            print(f"      kept: {r.workdir}", flush=True)
    total = summarize(results, time.monotonic() - t0)
    print("\nfigures:")
    print(table(total))
    print(json.dumps({"chaos": total}))
    if args.workdir is None and not any(Path(root).iterdir()):
        root.rmdir()
    for seed in total["failed_seeds"]:
        print(f"FAILED seed {seed}: scripts/chaos --schedules 1 --seed {seed}")
    return 1 if total["failed"] else 0
