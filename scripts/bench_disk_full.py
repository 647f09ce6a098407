#!/usr/bin/env python
"""Benchmark ``log()`` while the journal's disk is full (issue 12 item 14), on a real tmpfs.

    sudo python scripts/bench_disk_full.py [--calls 20000] [--size 4m]

A job journals on a fresh tmpfs of ``--size``, logs 100 steps of 10 floats, fills the disk
to the last block, then makes ``--calls`` more ``log()`` calls (timed one by one),
``update_config`` and ``finish()``. Then the space is freed and the journal recovered (as
the next ``init()`` or a ``plutosync`` pass does). Prints the ``log()`` cost before and while
full, the steps kept and dropped, the drops the journal counts and the run's final status,
then one JSON line of the figures. Needs root (``mount``); exits 2 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pluto_offline import journal  # noqa: E402

JOB = textwrap.dedent("""
    import json, os, statistics, sys, time
    import pluto_offline as pluto
    d, calls = sys.argv[1], int(sys.argv[2])
    run = pluto.init(dir=d + "/j", project="full", run_id="full",
                     settings={"autostart": False})
    data = [{f"m{k}": float(s * 10 + k) for k in range(10)} for s in range(100 + calls)]
    clock = time.perf_counter_ns
    before = []
    for s in range(100):
        a = clock(); run.log(data[s], step=s); before.append(clock() - a)
    run.flush()
    with open(d + "/filler", "wb") as f:          # the disk, full to the last block
        try:
            while True:
                f.write(b"\\0" * 65536)
                f.flush()
        except OSError:
            pass
    full = []
    t0 = time.perf_counter()
    for s in range(100, 100 + calls):
        a = clock(); run.log(data[s], step=s); full.append(clock() - a)
    wall = time.perf_counter() - t0
    try:
        run.update_config({"lr": 0.1})
        config = "ok"
    except pluto.JournalError as exc:
        config = f"JournalError: {exc}"
    a = time.perf_counter()
    run.finish()
    finish_ms = (time.perf_counter() - a) * 1000
    os.unlink(d + "/filler")
    us = lambda xs: [x / 1000 for x in xs]
    print(json.dumps({
        "before_median_us": statistics.median(us(before)),
        "full_median_us": statistics.median(us(full)),
        "full_mean_us": statistics.fmean(us(full)),
        "full_p99_us": sorted(us(full))[int(len(full) * 0.99)],
        "full_wall_s": wall, "update_config": config, "finish_ms": finish_ms,
    }))
""")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--size", default="4m")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        mnt = Path(tmp) / "mnt"
        mnt.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={args.size},mode=0700",
                            "tmpfs", str(mnt)], capture_output=True, text=True)
        if r.returncode:
            print(f"bench_disk_full: cannot mount a tmpfs ({r.stderr.strip()}); run as root",
                  file=sys.stderr)
            return 2
        try:
            env = dict(os.environ, PYTHONPATH=str(REPO))
            env.pop("PLUTO_API_KEY", None)
            job = subprocess.run([sys.executable, "-c", JOB, str(mnt), str(args.calls)],
                                 capture_output=True, text=True, env=env, timeout=600)
            if job.returncode:
                print(job.stdout, job.stderr, file=sys.stderr)
                return 1
            figures = json.loads(job.stdout.strip().splitlines()[-1])
            figures.update(_journal_figures(mnt / "j"))
            figures["job_stderr_lines"] = len(job.stderr.splitlines())
        finally:
            subprocess.run(["umount", "-l", str(mnt)], check=False)
    total = 100 + args.calls
    print(f"log() before full: {figures['before_median_us']:.1f} µs (median); while full: "
          f"{figures['full_median_us']:.1f} µs median, {figures['full_mean_us']:.1f} µs mean, "
          f"{figures['full_p99_us']:.1f} µs p99 ({figures['full_wall_s']:.2f} s for "
          f"{args.calls} calls)")
    print(f"steps kept {figures['steps_kept']} of {total}, dropped "
          f"{total - figures['steps_kept']}; the journal counts {figures['dropped_counted']} "
          f"dropped; final status {figures['status']}; update_config: "
          f"{figures['update_config'][:60]}; finish() {figures['finish_ms']:.1f} ms")
    print(json.dumps(figures))
    return 0


def _journal_figures(jdir: Path) -> dict:
    """Recover the journal (as the next init or plutosync pass), then what it holds."""
    j = journal.Journal.open(jdir)
    try:
        journal.recover(j)
        steps = {s for (p,) in j.conn.execute(
            "SELECT payload FROM events WHERE kind = 'metrics'")
            for s, _t, _d in journal.unpack_metrics(p)}
        last = j.conn.execute("SELECT payload FROM events WHERE kind = 'status' "
                              "ORDER BY seq DESC LIMIT 1").fetchone()
        try:
            from pluto_offline.journal import drops
            counted = sum(d.records for d in drops.dropped(j))
        except ImportError:  # before drops were journaled (issue 12 item 14)
            counted = 0
    finally:
        j.close()
    return {"steps_kept": len(steps), "dropped_counted": counted,
            "status": json.loads(last[0]) if last else None}


if __name__ == "__main__":
    sys.exit(main())
