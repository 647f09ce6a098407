"""Replay throughput of ``plutosync`` into the local server, beside the stock SDK's sync process.

    python scripts/bench_sync.py [--calls 1000000] [--metrics 4] [--per-event 2000]
                                 [--stock-calls 2000] [--no-stock]

1. Writes a journal of ``--calls`` log calls (``--metrics`` floats each) in events of
   ``--per-event`` calls, packed as the SDK's writer thread commits them (not timed).
2. Starts a real ``plutosync serve`` on a fresh data dir and times a real
   ``plutosync run --once`` process delivering the whole journal (process start to exit), while
   sampling its RSS; then checks that the server stored every point.
3. When ``pluto-ml`` is installed: a stock ``pluto`` job logs ``--stock-calls`` calls to the same
   server, and the time from its first ``log()`` until the server holds every point gives the
   stock sync process's rate.

Ends with one JSON line: ``calls_per_s``, ``points_per_s``, ``rss_mb`` (peak), ``interpreter_rss_mb`` (a bare
``python`` here, for scale), ``seconds``, and ``stock_calls_per_s`` when measured.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import marshal
import os
import platform
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import psutil
import requests
from _benchserver import start_server

from pluto_offline import journal
from pluto_offline.journal.payloads import SCHEMA_ENTRY, VALUES_ENTRY

API_KEY = "plt_bench_sync_key"
NAMES = ("train/loss", "train/acc", "val/loss", "lr")
T0 = 1_700_000_000_000


def write_journal(path: str, calls: int, metrics: int, per_event: int) -> int:
    """One run of ``calls`` log calls; returns the journal's size in bytes."""
    names = [NAMES[i % len(NAMES)] + ("" if i < len(NAMES) else f"_{i}") for i in range(metrics)]
    j = journal.Journal.open(path)
    with j.transaction():
        key = journal.add_run(j, project="bench", run_id="bench-sync", name="bench")
        journal.append_event(j, key, "create", time=T0, payload={
            "name": "bench", "config": {"calls": calls}, "tags": [], "settings": None,
            "fork": None})
        journal.append_event(j, key, "lognames", payload={"type": "METRIC", "names": names})
    values = struct.Struct(f"<Iqq{len(names)}d")
    for start in range(0, calls, per_event):
        steps = range(start, min(calls, start + per_event))
        # packed entries, exactly as the SDK's writer commits log()'s fast path: the schema,
        # then one values entry per call; plutosync builds the dicts and formats the floats
        payload = journal.pack_metrics(
            [SCHEMA_ENTRY + marshal.dumps((0, tuple(names)))]
            + [VALUES_ENTRY + values.pack(0, s, T0 + s, *((s + i) * 0.001 for i in range(len(names))))
               for s in steps])
        with j.transaction():
            journal.append_event(j, key, "metrics", payload=payload, raw=True, step=steps[-1])
    with j.transaction():
        journal.append_event(j, key, "status", payload={"status": "COMPLETED", "metadata": None})
    j.close()
    return os.path.getsize(journal.resolve_path(path))


def stored(url: str, run_id: int) -> int:
    r = requests.get(f"{url}/_admin/stats", params={"runId": run_id},
                     headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)
    return r.json()["metrics"]["stored"]


def run_daemon(url: str, journal_dir: str) -> tuple[float, float, float, int]:
    """``(seconds, peak RSS MB, CPU seconds, exit code)`` of ``plutosync run --once``.

    CPU is the last sample before exit: it shows how much of the wall time is the daemon's own
    work (the rest is the server's, on the same two cores)."""
    env = {**os.environ, "PLUTO_API_KEY": API_KEY}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "syncd", "run", "--dir", journal_dir,
                             "--server", url, "--once", "--quiet"], env=env)
    ps = psutil.Process(proc.pid)
    peak, cpu = 0, 0.0
    while proc.poll() is None:
        try:
            with ps.oneshot():
                peak = max(peak, ps.memory_info().rss)
                times = ps.cpu_times()
                cpu = times.user + times.system
        except psutil.NoSuchProcess:
            break
        time.sleep(0.02)
    return time.perf_counter() - start, peak / 2**20, cpu, proc.returncode


def interpreter_rss_mb() -> float:
    """RSS of a bare ``python`` in this environment: the floor under the daemon's figure
    (pluto-ml's .pth hook imports the whole stock SDK into every process, ~40 MB)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
    time.sleep(1.0)
    rss = psutil.Process(proc.pid).memory_info().rss / 2**20
    proc.wait()
    return rss


STOCK_JOB = """
import json, sys, time
import pluto
n, names = int(sys.argv[1]), json.loads(sys.argv[2])
run = pluto.init(project="bench-stock", name="stock", config={"calls": n})
print("BENCH " + json.dumps({"id": run.id, "t": time.time()}), flush=True)
for s in range(n):
    run.log({k: (s + i) * 0.001 for i, k in enumerate(names)}, step=s)
sys.stdin.readline()  # wait until the parent has seen every point
run.finish()
"""


def points(url: str, run_id: int, name: str) -> int:
    r = requests.get(f"{url}/api/runs/metrics", timeout=30,
                     params={"projectName": "bench-stock", "runId": run_id, "logName": name},
                     headers={"Authorization": f"Bearer {API_KEY}"})
    return len(r.json()["metrics"])


def run_stock(url: str, calls: int, metrics: int, timeout: float = 600) -> float | None:
    """Calls per second of the stock SDK's sync process, first log() to last point stored.

    Counts the benchmark's own names only: the stock SDK also logs system metrics."""
    if importlib.util.find_spec("pluto") is None:
        print("stock pluto: not installed (pip install pluto-ml)")
        return None
    env = {**os.environ, "PLUTO_API_KEY": API_KEY, "PLUTO_URL_API": url,
           "PLUTO_URL_INGEST": url, "PLUTO_URL_PY": url, "PLUTO_URL_APP": url}
    names = list(NAMES[:metrics])
    with tempfile.TemporaryDirectory(prefix="bench-stock-") as cwd:
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(STOCK_JOB), str(calls), json.dumps(names)],
            env=env, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None and proc.stdin is not None
        seen, line = [], ""
        while not line.startswith("BENCH "):  # the stock SDK prints its banner first
            line = proc.stdout.readline()
            seen.append(line)
            if not line:
                print("stock pluto job failed:\n" + "".join(seen[-20:]))
                return None
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        head = json.loads(line[len("BENCH "):])
        deadline = time.monotonic() + timeout
        done = False
        while not done and time.monotonic() < deadline:
            time.sleep(0.2)
            done = all(points(url, head["id"], n) >= calls for n in names)
        elapsed = time.time() - head["t"]
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait(120)
    if not done:
        print(f"stock pluto: not every point stored after {timeout:.0f} s")
    return calls / elapsed if done else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=1_000_000)
    ap.add_argument("--metrics", type=int, default=4)
    ap.add_argument("--per-event", type=int, default=2000)
    ap.add_argument("--stock-calls", type=int, default=2000)
    ap.add_argument("--no-stock", action="store_true")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        jdir = os.path.join(tmp, "journal")
        t = time.perf_counter()
        size = write_journal(jdir, args.calls, args.metrics, args.per_event)
        print(f"journal: {args.calls:,} calls x {args.metrics} metrics, {size / 2**20:.0f} MiB, "
              f"written in {time.perf_counter() - t:.1f} s")
        server, url = start_server(os.path.join(tmp, "server"), API_KEY)
        try:
            seconds, rss, cpu, code = run_daemon(url, jdir)
            if code != 0:
                raise SystemExit(f"plutosync run --once exited {code}")
            with journal.Journal.open(jdir) as j:
                run_id = journal.find_run(j, project="bench", run_id="bench-sync").server_id
            points = stored(url, run_id)
            if points != args.calls * args.metrics:
                raise SystemExit(f"server stored {points} points, expected {args.calls * args.metrics}")
            figures = {
                "calls": args.calls, "metrics": args.metrics, "seconds": round(seconds, 2),
                "calls_per_s": round(args.calls / seconds),
                "points_per_s": round(points / seconds),
                "rss_mb": round(rss, 1),
                "daemon_cpu_s": round(cpu, 1),
                "interpreter_rss_mb": round(interpreter_rss_mb(), 1),
            }
            print(f"plutosync: {figures['calls_per_s']:,} calls/s, "
                  f"{figures['points_per_s']:,} points/s, peak RSS {rss:.0f} MB, {seconds:.1f} s "
                  f"(daemon CPU {cpu:.1f} s)")
            if not args.no_stock:
                stock = run_stock(url, args.stock_calls, args.metrics)
                if stock is not None:
                    figures["stock_calls"] = args.stock_calls
                    figures["stock_calls_per_s"] = round(stock, 1)
                    print(f"stock pluto sync process: {stock:,.1f} calls/s "
                          f"({args.stock_calls:,} calls)")
        finally:
            server.terminate()
            server.wait(30)
    figures["machine"] = f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
