"""Ingest throughput of ``plutosync serve`` over loopback, deduplication included.

    python scripts/bench_server.py [--clients 4] [--lines 2000] [--metrics 10]
                                   [--batches 25] [--replay 0.2] [--repeats 3]

Starts a real server subprocess on a fresh data dir, creates one run per client, and has the
clients post NDJSON batches (``--lines`` lines x ``--metrics`` metrics each) concurrently over
keep-alive connections. A ``--replay`` fraction of the batches re-sends steps already sent
(with a later time) so the deduplicating upsert is on the measured path. Bodies are built
before the clock starts. Prints one line per repeat, then one JSON line with the figures;
``points_per_s`` is the median over repeats.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time

API_KEY = "plt_bench_key"


def start_server(data_dir: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd", "serve", "--port", "0", "--data", data_dir,
         "--api-key", API_KEY],
        stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on http://" not in line:
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    port = int(line.split("listening on http://", 1)[1].split()[0].rsplit(":", 1)[1])
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
    return proc, port


def post(conn: http.client.HTTPConnection, path: str, body: bytes,
         headers: dict[str, str]) -> bytes:
    conn.request("POST", path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"{path} -> {response.status}: {data[:200]!r}")
    return data


def build_bodies(args: argparse.Namespace, seed_time: int) -> tuple[list[bytes], int]:
    """A client's batches: fresh steps, with every 1/replay-th batch replaying the previous."""
    names = [f"train/metric_{i}" for i in range(args.metrics)]
    bodies, points, step = [], 0, 0
    replay_every = round(1 / args.replay) if args.replay > 0 else 0
    for index in range(args.batches):
        replay = replay_every and index % replay_every == replay_every - 1 and step >= args.lines
        first = step - args.lines if replay else step
        lines = [
            json.dumps({"time": seed_time + index, "step": s,
                        "data": {n: (s * 0.001 + k) for k, n in enumerate(names)}})
            for s in range(first, first + args.lines)
        ]
        if not replay:
            step += args.lines
        bodies.append(("\n".join(lines) + "\n").encode())
        points += args.lines * args.metrics
    return bodies, points


def one_repeat(port: int, args: argparse.Namespace, repeat: int) -> dict[str, float]:
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=120) for _ in range(args.clients)]
    auth = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    runs = []
    for index, conn in enumerate(conns):
        body = json.dumps({"runName": f"bench-{repeat}-{index}", "projectName": "bench",
                           "externalId": f"bench-{repeat}-{index}"}).encode()
        runs.append(json.loads(post(conn, "/api/runs/create", body, auth))["runId"])
    work = [build_bodies(args, 1_700_000_000_000 + repeat * 1000) for _ in conns]
    errors: list[BaseException] = []

    def client(index: int) -> None:
        headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/x-ndjson",
                   "X-Run-Id": str(runs[index]), "X-Project-Name": "bench"}
        try:
            for body in work[index][0]:
                post(conns[index], "/ingest/metrics", body, headers)
        except BaseException as exc:  # reported after the clock stops
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    for conn in conns:
        conn.close()
    if errors:
        raise errors[0]
    points = sum(p for _, p in work)
    return {"points": points, "seconds": elapsed, "points_per_s": points / elapsed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--lines", type=int, default=2000, help="NDJSON lines per request")
    parser.add_argument("--metrics", type=int, default=10, help="metrics per line")
    parser.add_argument("--batches", type=int, default=25, help="requests per client")
    parser.add_argument("--replay", type=float, default=0.2, help="fraction of replayed batches")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-server-") as data_dir:
        proc, port = start_server(data_dir)
        try:
            results = []
            for repeat in range(args.repeats):
                result = one_repeat(port, args, repeat)
                results.append(result)
                print(f"repeat {repeat + 1}: {result['points']:,} points in "
                      f"{result['seconds']:.2f} s = {result['points_per_s']:,.0f} points/s",
                      flush=True)
        finally:
            proc.terminate()
            proc.wait(10)
    rates = [r["points_per_s"] for r in results]
    print(json.dumps({
        "benchmark": "server_ingest",
        "points_per_s": round(statistics.median(rates)),
        "points_per_s_min": round(min(rates)),
        "points_per_s_max": round(max(rates)),
        "points_per_repeat": results[0]["points"],
        "clients": args.clients, "lines_per_request": args.lines,
        "metrics_per_line": args.metrics, "replay_fraction": args.replay,
        "repeats": args.repeats, "cpus": os.cpu_count(), "python": platform.python_version(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
