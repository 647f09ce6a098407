#!/usr/bin/env python
"""Benchmark the system-metrics sampler: its CPU cost per sample and per core at the interval.

    python scripts/bench_sysmetrics.py [--samples 200] [--interval 4]

One ``pluto_offline`` run (console capture off); ``SystemSampler.sample()`` plus handing the
record to the run's spill (what the sampler thread does each interval), timed ``--samples``
times in thread CPU time. Baseline, same process: the stock SDK's own ``System.monitor()``
(``pluto/sys.py``) timed the same way. Reports medians, the ratio to the stock sampler, and
the share of one core at ``--interval`` seconds (target: <= 1 %). Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pluto_offline  # noqa: E402
from pluto_offline.sysmetrics import SystemSampler  # noqa: E402


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.thread_time()
        fn()
        out.append(time.thread_time() - t)
        time.sleep(0.005)  # let counters move, as between real samples
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--interval", type=float, default=4.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        run = pluto_offline.init(dir=d, project="bench", settings={
            "disable_console": True, "disable_system_metrics": True})
        sampler = SystemSampler(run, d, args.interval)
        step = [0]

        def ours() -> None:
            data = sampler.sample()
            step[0] += 1
            with run._append_lock:
                run._log_slow(data, step[0], time.time_ns() // 1_000_000)

        ours()  # the first sample sets the baselines (and looks for GPUs)
        mine = statistics.median(timed(ours, args.samples))
        run.finish()
    stock = None
    try:
        from pluto.sets import Settings
        from pluto.sys import System

        s = Settings()
        s.dir = tempfile.mkdtemp()
        Path(s.get_dir()).mkdir(parents=True, exist_ok=True)
        system = System(s)
        system.monitor()
        stock = statistics.median(timed(system.monitor, args.samples))
    except Exception as exc:  # the stock SDK is only a baseline
        print(f"(stock sampler not measured: {exc})")
    summary = {"samples": args.samples, "interval_s": args.interval,
               "sample_ms": round(mine * 1000, 3),
               "core_pct_at_interval": round(100 * mine / args.interval, 4)}
    if stock:
        summary["stock_sample_ms"] = round(stock * 1000, 3)
        summary["vs_stock"] = round(mine / stock, 3)
    for k, v in summary.items():
        print(f"{k:>22}: {v}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
