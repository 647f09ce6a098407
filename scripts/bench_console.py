#!/usr/bin/env python
"""Benchmark console capture: a job printing 200,000 lines, capture on vs off.

    python scripts/bench_console.py [--lines 200000] [--rounds 5] [--no-stock] [--no-floor]

Each round runs, in turn, real jobs whose stdout is a file (as under Slurm):

- ``off``: ``pluto_offline.init(settings={"disable_console": True})``, then the prints: the
  baseline;
- ``on``: ``pluto_offline.init()`` (capture on, the default);
- ``off-cat``: as ``off``, but stdout a pipe into ``cat > file``: what any reader of a pipe
  costs the job, without pluto-offline (``--no-floor`` skips it);
- ``stock-off`` / ``stock-on``: the stock SDK (``import pluto``, ``pluto.init`` against this
  repo's local server), with ``disable_console`` and with its default fd-level capture.

Figures per mode (medians over the rounds): ``print_s``, the print loop as the job times it
(what printing costs the training process), and ``job_s``, from the job's start until its
stderr reaches EOF: for ``on``, until the helper has journaled the last line and exited.
Ratios are against ``off`` (and ``stock-on`` against ``stock-off``), measured in the same run;
the target (issue 10) is ``on_vs_off_print`` <= 1.3. The job's output file is checked byte for
byte after every ``on`` and ``off-cat`` run. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

JOB = """
import os, sys, time
N = int(os.environ["BENCH_LINES"])
{init}
t0 = time.perf_counter()
for i in range(N):
    print(f"step {{i}} loss {{1.0 / (i + 1):.6f}} epoch 3 lr 0.001")
sys.stdout.flush()
t1 = time.perf_counter()
with open(os.environ["BENCH_OUT"], "w") as f:
    f.write(repr((t0, t1, time.time() - (time.perf_counter() - t0))))
{finish}
"""
INITS = {
    "off": ("import pluto_offline as pluto\n"
            "run = pluto.init(settings={'disable_console': True})", "run.finish()"),
    "on": ("import pluto_offline as pluto\nrun = pluto.init()", "run.finish()"),
    "off-cat": ("import pluto_offline as pluto\n"
                "run = pluto.init(settings={'disable_console': True})", "run.finish()"),
    "stock-off": ("import pluto\nrun = pluto.init(project='bench', "
                  "settings={'disable_console': True, 'disable_system_metrics': True})",
                  "run.finish()"),
    "stock-on": ("import pluto\nrun = pluto.init(project='bench', "
                 "settings={'disable_system_metrics': True})", "run.finish()"),
}


def expected_output(n: int) -> bytes:
    return "".join(f"step {i} loss {1.0 / (i + 1):.6f} epoch 3 lr 0.001\n"
                   for i in range(n)).encode()


def one(mode: str, n: int, work: Path, env: dict[str, str]) -> dict[str, float]:
    init, finish = INITS[mode]
    code = textwrap.dedent(JOB.format(init=init, finish=finish))
    out_file = work / f"{mode}.out"
    times = work / f"{mode}.times"
    full = {**env, "BENCH_LINES": str(n), "BENCH_OUT": str(times),
            "PLUTO_DIR": str(work / "journal"), "PLUTO_OFFLINE_AUTOSTART": "0"}
    with open(out_file, "wb") as out:
        start = time.perf_counter()
        cat = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=out) \
            if mode == "off-cat" else None
        proc = subprocess.Popen([sys.executable, "-c", code],
                                stdout=out if cat is None else cat.stdin,
                                stderr=subprocess.PIPE, env=full)
        if cat is not None:
            cat.stdin.close()
        _, err = proc.communicate(timeout=600)  # EOF on stderr: the helper has exited too
        if cat is not None:
            cat.wait(60)
        end = time.perf_counter()
    if proc.returncode != 0:
        raise SystemExit(f"{mode} job failed: {err.decode(errors='replace')[-2000:]}")
    t0, t1, _ = eval(times.read_text())  # noqa: S307 - our own repr of floats
    figures = {"print_s": t1 - t0, "job_s": end - start}
    if mode in ("on", "off-cat"):
        if out_file.read_bytes() != expected_output(n):
            raise SystemExit(f"{mode}: the job's output changed")
    return figures


def journaled_lines(path: Path) -> int:
    from pluto_offline import journal

    with journal.Journal.open(path, readonly=True) as j:
        return int(j.conn.execute(
            "SELECT coalesce(sum(length(payload) - length(replace(payload, char(10), '')) + 1), 0)"
            " FROM events WHERE kind = 'logs'").fetchone()[0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-stock", action="store_true", help="skip the stock SDK's figures")
    ap.add_argument("--no-floor", action="store_true", help="skip the off-cat mode")
    args = ap.parse_args()
    modes = ["off", "on"] + ([] if args.no_floor else ["off-cat"]) + (
        [] if args.no_stock else ["stock-off", "stock-on"])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLUTO_", "MLOP_"))}
    server = None
    if not args.no_stock:
        from tests.fixtures.server import LocalServer

        server = LocalServer(Path(tempfile.mkdtemp(prefix="bench-console-server-"))).start()
        env.update(server.env())
        env["PLUTO_API_KEY"] = server.api_key
    results: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    try:
        for r in range(args.rounds):
            for mode in modes:
                with tempfile.TemporaryDirectory(prefix="bench-console-") as d:
                    results[mode].append(one(mode, args.lines, Path(d), env))
                    if mode == "on" and r == 0:
                        got = journaled_lines(Path(d) / "journal")
                        if got != args.lines:
                            raise SystemExit(f"{got} of {args.lines} lines journaled")
    finally:
        if server is not None:
            server.stop()
    med = {m: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for m, rs in results.items()}
    summary: dict[str, float] = {"lines": args.lines, "rounds": args.rounds}
    for m in modes:
        summary[f"{m}_print_s"] = round(med[m]["print_s"], 4)
        summary[f"{m}_job_s"] = round(med[m]["job_s"], 4)
    summary["on_vs_off_print"] = round(med["on"]["print_s"] / med["off"]["print_s"], 3)
    summary["on_vs_off_job"] = round(med["on"]["job_s"] / med["off"]["job_s"], 3)
    if not args.no_floor:
        summary["cat_vs_off_print"] = round(med["off-cat"]["print_s"] / med["off"]["print_s"], 3)
        summary["cat_vs_off_job"] = round(med["off-cat"]["job_s"] / med["off"]["job_s"], 3)
    if not args.no_stock:
        summary["stock_on_vs_off_print"] = round(
            med["stock-on"]["print_s"] / med["stock-off"]["print_s"], 3)
        summary["stock_on_vs_off_job"] = round(
            med["stock-on"]["job_s"] / med["stock-off"]["job_s"], 3)
    for k, v in summary.items():
        print(f"{k:>26}: {v}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
