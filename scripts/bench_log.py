#!/usr/bin/env python
"""Benchmark the SDK write path: ``run.log()`` of 10 floats, against raw SQLite.

    python scripts/bench_log.py [--calls 100000] [--dir DIR]

Baseline (same process, same disk): each call's record JSON-encoded, inserted with
``executemany`` 2,000 rows per transaction (WAL, synchronous=FULL, as the journal).
pluto_offline: ``init()``, N ``log()`` calls timed one by one, then ``flush()``; throughput
is N / (time from the first call until ``flush()`` returned, i.e. all durable in SQLite).
Ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pluto_offline  # noqa: E402


def make_data(n: int) -> list[dict[str, float]]:
    rng = random.Random(0)
    return [{f"metric/{k}": rng.random() for k in range(10)} for _ in range(n)]


def baseline(path: Path, data: list[dict[str, float]], batch: int = 2000) -> float:
    """Calls per second of the raw-SQLite write: json payload + executemany."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, run INTEGER, kind TEXT, "
                 "time INTEGER, step INTEGER, payload TEXT)")
    start = time.perf_counter()
    rows = []
    for step, d in enumerate(data, 1):
        t = int(time.time() * 1000)
        rows.append((1, "metrics", t, step, json.dumps({"time": t, "step": step, "data": d})))
        if len(rows) == batch:
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO events (run, kind, time, step, payload) "
                             "VALUES (?, ?, ?, ?, ?)", rows)
            conn.execute("COMMIT")
            rows = []
    if rows:
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO events (run, kind, time, step, payload) "
                         "VALUES (?, ?, ?, ?, ?)", rows)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return len(data) / elapsed


def sdk(directory: Path, data: list[dict[str, float]]) -> tuple[float, list[float], float]:
    """(calls/s end to end, per-call latencies in µs, init ms) of pluto_offline."""
    pluto_offline.journal.Journal.open(directory).close()
    t0 = time.perf_counter()
    run = pluto_offline.init(dir=directory, project="bench", config={"calls": len(data)})
    init_ms = (time.perf_counter() - t0) * 1000
    log = run.log
    clock = time.perf_counter_ns
    lat = [0] * len(data)
    start = time.perf_counter()
    for i, d in enumerate(data):
        a = clock()
        log(d)
        lat[i] = clock() - a
    run.flush()
    elapsed = time.perf_counter() - start
    run.finish()
    return len(data) / elapsed, [x / 1000 for x in lat], init_ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3, help="figures are medians over repeats")
    ap.add_argument("--dir", help="where to write (default: a temporary directory)")
    args = ap.parse_args()
    data = make_data(args.calls)
    figures = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            base = baseline(Path(tmp) / "baseline.db", data)
            calls, lat, init_ms = sdk(Path(tmp) / "journal", data)
        lat.sort()
        figures.append((calls, base, calls / base, statistics.median(lat),
                        lat[int(len(lat) * 0.99)], lat[-1], init_ms))
    med = [statistics.median(col) for col in zip(*figures, strict=True)]
    out = {
        "calls": args.calls,
        "repeats": args.repeat,
        "calls_per_s": round(med[0]),
        "baseline_calls_per_s": round(med[1]),
        "ratio": round(med[2], 2),
        "median_us": round(med[3], 2),
        "p99_us": round(med[4], 2),
        "max_us": round(med[5], 1),
        "init_ms": round(med[6], 2),
    }
    print(f"raw SQLite baseline : {out['baseline_calls_per_s']:>10,} calls/s")
    print(f"pluto_offline.log   : {out['calls_per_s']:>10,} calls/s  ({out['ratio']}x)")
    print(f"log() latency       : median {out['median_us']} µs, p99 {out['p99_us']} µs, "
          f"max {out['max_us']} µs; init {out['init_ms']} ms")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
