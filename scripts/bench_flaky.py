"""How long a ``plutosync push`` takes through a server (or proxy) failing a share of requests.

    python scripts/bench_flaky.py [--runs 3] [--steps 200] [--epochs 10] [--p 0.25]
                                  [--repeats 7]

1. A real job (``pluto_offline``, in a subprocess) writes ``--runs`` runs of ``--steps`` logged
   steps each, with config and tags, recording its epoch in the config ``--epochs`` times
   (so a run is some 25 requests, not 5), ended by ``finish()`` (not timed).
2. For each repeat: a fresh ``plutosync serve`` answering HTTP 503 to a random ``--p`` of all
   requests (every endpoint; seed = the repeat's number), and a real ``plutosync push`` of a
   copy of the journal, timed from process start to exit; then checks that the server holds
   every point and every run COMPLETED.

Ends with one JSON line: ``seconds`` (every repeat), ``median_s``, ``p90_s``, ``max_s``, ``faults``
(503s answered, median). Compare commits by running this at each, alternated (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

import requests
from _benchserver import start_server

API_KEY = "plt_bench_flaky_key"

JOB = textwrap.dedent("""
    import sys
    import pluto_offline as pluto
    runs, steps, epochs = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    for r in range(runs):
        run = pluto.init(project="bench", name=f"flaky-{r}", config={"lr": 0.1, "r": r},
                         tags=["bench"])
        for s in range(steps):
            run.log({"train/loss": 1.0 / (s + 1)}, step=s)
            if (s + 1) % max(1, steps // epochs) == 0:
                run.update_config({"epoch": (s + 1) // max(1, steps // epochs)})
        run.add_tags(["done"])
        run.finish()
""")


def check(url: str, runs: int, steps: int) -> int:
    """Every run COMPLETED with every point; returns the 503s the server answered."""
    auth = {"Authorization": f"Bearer {API_KEY}"}
    faults = requests.get(f"{url}/_admin/faults", headers=auth, timeout=10).json()["faults"]
    requests.delete(f"{url}/_admin/faults", headers=auth, timeout=10)
    listed = requests.get(f"{url}/api/runs/list", params={"projectName": "bench"},
                          headers=auth, timeout=10).json()
    found = listed.get("runs", listed) if isinstance(listed, dict) else listed
    if len(found) != runs:
        raise SystemExit(f"expected {runs} runs on the server, found {len(found)}")
    for run in found:
        details = requests.get(f"{url}/api/runs/details/{run['id']}", headers=auth,
                               timeout=10).json()
        if details["status"] != "COMPLETED":
            raise SystemExit(f"run {run['id']} is {details['status']}, not COMPLETED")
        stats = requests.get(f"{url}/_admin/stats", params={"runId": run["id"]},
                             headers=auth, timeout=10).json()
        if stats["metrics"].get("stored") != steps:
            raise SystemExit(f"run {run['id']} has {stats['metrics']} points, not {steps}")
    return sum(f["fired"] for f in faults)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=10, help="config updates per run")
    ap.add_argument("--p", type=float, default=0.25, help="share of requests answered 503")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="bench-flaky-")
    env = {**os.environ, "PLUTO_DIR": os.path.join(work, "job"), "PLUTO_OFFLINE_AUTOSTART": "0"}
    subprocess.run([sys.executable, "-c", JOB, str(args.runs), str(args.steps),
                    str(args.epochs)], env=env,
                   check=True)
    seconds, fired = [], []
    try:
        for n in range(args.repeats):
            data, copy = os.path.join(work, f"srv-{n}"), os.path.join(work, f"push-{n}")
            shutil.copytree(os.path.join(work, "job"), copy)
            server, url = start_server(data, API_KEY, "--fault",
                                       f"503,p={args.p},seed={n + 1}")
            try:
                push_env = {**os.environ, "PLUTO_API_KEY": API_KEY, "PLUTO_URL_API": url,
                            "PLUTO_URL_INGEST": url, "PLUTO_URL_PY": url}
                start = time.monotonic()
                done = subprocess.run([sys.executable, "-m", "syncd", "push", copy],
                                      env=push_env, capture_output=True, text=True)
                seconds.append(time.monotonic() - start)
                if done.returncode != 0:
                    raise SystemExit(f"push exited {done.returncode}: {done.stdout[-2000:]}"
                                     f"{done.stderr[-2000:]}")
                fired.append(check(url, args.runs, args.steps))
            finally:
                server.terminate()
                server.wait(timeout=10)
            print(f"repeat {n}: {seconds[-1]:.2f} s, {fired[-1]} answers 503", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"seconds": [round(s, 2) for s in seconds],
                      "median_s": round(statistics.median(seconds), 2),
                      "p90_s": round(statistics.quantiles(seconds, n=10)[-1], 2)
                      if len(seconds) > 1 else None, "max_s": round(max(seconds), 2), "faults": statistics.median(fired),
                      "runs": args.runs, "steps": args.steps, "p": args.p}))


if __name__ == "__main__":
    main()
