"""``scripts/chaos``: run schedules ``seed .. seed+N-1`` (or the fast set), print figures, exit 1
on a failure."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from tests.chaos.oracle import FAILURES
from tests.chaos.runner import Result, run_schedule
from tests.chaos.schedule import build, is_multi

# The CI set (test_chaos.py runs these): the first 20 single-journal seeds, then two quick
# multi-journal ones: 1119, four DDP ranks on two nodes (one journal pushed afterwards, one
# delivered live); 1145, four Slurm allocations (SIGTERM, finish, SIGTERM, finish), the first
# and last journals pushed together after the middle two were delivered live.
SINGLE_FAST = tuple(s for s in range(1, 100) if not is_multi(s))[:20]
MULTI_FAST = (1119, 1145)
FAST_SEEDS = SINGLE_FAST + MULTI_FAST


def summarize(results: list[Result], seconds: float) -> dict:
    """Totals over schedules: failures per class, figures, what the chaos did."""
    total: dict = {"schedules": len(results), "failed": sum(not r.ok for r in results),
                   "seconds": round(seconds, 1)}
    for k in FAILURES:
        total[k] = sum(getattr(r.counts, k) for r in results)
    total["multi_journal"] = sum(r.multi for r in results)
    for k in ("points_checked", "strings_checked", "lines_checked", "rows_checked",
              "files_checked", "absorbed_duplicates", "resent_strings", "concurrent_copies",
              "pushes_timed_out", "runs"):
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
    strings = f"  strings {c.strings_checked:>3}" if r.multi else ""
    strings += f"  lines {c.lines_checked:>3}  rows {c.rows_checked:>3}  files {c.files_checked:>2}"
    return (f"seed {r.seed:>6}  {'ok  ' if r.ok else 'FAIL'}  {r.seconds:5.1f}s  "
            f"drain {'-' if r.drain_seconds is None else f'{r.drain_seconds:.1f}s':>6}  "
            f"runs {c.runs}  points {c.points_checked:>4}{strings}  "
            f"absorbed {c.absorbed_duplicates:>3}  "
            f"faults {r.faults_fired:>2}  {bad or '; '.join(r.notes)}")


def table(total: dict) -> str:
    rows = [("schedules", total["schedules"]), ("  of which multi-journal", total["multi_journal"]),
            ("failed schedules", total["failed"])]
    rows += [(k, total[k]) for k in FAILURES]
    rows += [("runs checked", total["runs"]), ("metric points checked", total["points_checked"]),
             ("string-series records checked", total["strings_checked"]),
             ("console lines checked", total["lines_checked"]),
             ("histogram rows checked", total["rows_checked"]),
             ("files checked (images, artifacts)", total["files_checked"]),
             ("replays absorbed by the server", total["absorbed_duplicates"]),
             ("rows, lines or files stored twice after no answer (counted by the journals)",
              total["resent_strings"]),
             ("runs whose copies two processes delivered at once (documented limit)",
              total["concurrent_copies"]),
             ("pushes whose --timeout ran out under faults (drained after)",
              total["pushes_timed_out"]),
             ("faults fired", total["faults_fired"])]
    rows += [(k, v) for k, v in total["chaos"].items()]
    rows += [("drain median / max (s)", f"{total['drain_s_median']} / {total['drain_s_max']}"),
             ("wall time (s)", total["seconds"])]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/chaos", description=__doc__)
    p.add_argument("--schedules", type=int, default=None, metavar="N",
                   help="how many seeds (default 20 with --seed; neither: the fast set)")
    p.add_argument("--seed", type=int, default=None, metavar="S",
                   help="the first schedule's seed; the others follow (S+1, S+2, ...)")
    p.add_argument("--only", choices=("single", "multi"), default=None,
                   help="run only the single-journal or the multi-journal seeds of the range")
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
    if args.seed is None and args.schedules is None:
        seeds: list[int] = list(FAST_SEEDS)
    else:
        first = 1 if args.seed is None else args.seed
        seeds = list(range(first, first + (20 if args.schedules is None else args.schedules)))
    if args.only:
        seeds = [s for s in seeds if is_multi(s) == (args.only == "multi")]
    for seed in seeds:
        try:
            r = run_schedule(build(seed), root / f"seed-{seed}")
        except KeyboardInterrupt:  # Ctrl-C: the figures of the schedules that completed
            print(f"interrupted: {len(results)} of {len(seeds)} schedules completed")
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
