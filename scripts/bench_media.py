#!/usr/bin/env python
"""Benchmark files offline: what ``log()`` of an image or an artifact costs the training thread,
beside the stock SDK, and how fast plutosync uploads beside a raw PUT to the same server.

    python scripts/bench_media.py [--images 200] [--artifact-mb 256]

1. ``image_log_us``: median of ``run.log({"img": pluto_offline.Image(a)})`` for a 256×256×3
   uint8 array (training thread only; the stager encodes and hashes in the background), and
   ``stock_image_log_us``: the same call with the stock SDK (pluto-ml) against the same
   ``plutosync serve``, in a child process, measured in this run; ``png_encode_us`` is
   Pillow's PNG encode of that array (what the stock SDK spends in log()) and
   ``stdlib_png_encode_us`` our stager's encoder.
2. ``artifact_log_us``: median of ``log({"ckpt": Artifact(path)})`` of an ``--artifact-mb`` file
   (one stat: O(1) whatever the size).
3. ``upload_mb_per_s``: ``plutosync run --once`` delivering that artifact (from the daemon's
   start to its exit), with the daemon's peak RSS (``daemon_rss_mb``); ``raw_put_mb_per_s``: one
   presign and a streamed ``requests`` PUT of the same bytes to the same server.
Ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import requests
from PIL import Image as PILImage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _benchserver import start_server  # noqa: E402

import pluto_offline  # noqa: E402
from pluto_offline.journal import encoders  # noqa: E402

API_KEY = "plt_bench_media_key"


def median_us(samples: list[int]) -> float:
    return round(statistics.median(samples) / 1000, 1)


def images(jdir: str, n: int, image: np.ndarray) -> tuple[float, float]:
    """(median µs per log() of an Image, seconds until all were staged)."""
    run = pluto_offline.init(dir=jdir, project="bench", name="images")
    times = []
    for i in range(n):
        t0 = time.perf_counter_ns()
        run.log({"img": pluto_offline.Image(image)}, step=i)
        times.append(time.perf_counter_ns() - t0)
    start = time.perf_counter()
    run.finish()
    run._media.wait_staged()
    return median_us(times), time.perf_counter() - start


def artifacts(jdir: str, path: str, n: int) -> float:
    run = pluto_offline.init(dir=jdir, project="bench", name="artifact", run_id="artifact")
    times = []
    for i in range(n):
        t0 = time.perf_counter_ns()
        run.log({"ckpt": pluto_offline.Artifact(path)}, step=i)
        times.append(time.perf_counter_ns() - t0)
    run.finish()
    run._media.wait_staged()
    return median_us(times)


STOCK_JOB = """
import json, sys, time
import numpy as np
import pluto
n = int(sys.argv[1])
image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
run = pluto.init(project="bench-stock", name="stock", settings={
    "sync_process_flush_interval": 0.2, "disable_system_metrics": True})
times = []
for i in range(n):
    t0 = time.perf_counter_ns()
    run.log({"img": pluto.Image(image)}, step=i)
    times.append(time.perf_counter_ns() - t0)
print(json.dumps(times), flush=True)
run.finish()
"""


def stock_images(url: str, n: int, home: str) -> float:
    env = {**os.environ, "PLUTO_API_KEY": API_KEY, "PLUTO_URL_API": url,
           "PLUTO_URL_INGEST": url, "PLUTO_URL_PY": url, "PLUTO_URL_APP": url, "HOME": home,
           "PLUTO_DIR": os.path.join(home, "pluto"), "PLUTO_DISABLE_TELEMETRY": "1"}
    out = subprocess.run([sys.executable, "-c", STOCK_JOB, str(n)], env=env,
                         capture_output=True, text=True, timeout=600)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("[")]
    if not lines:
        raise SystemExit(f"stock SDK job failed:\n{out.stderr[-2000:]}")
    return median_us(json.loads(lines[-1]))


def encode_us(image: np.ndarray, rounds: int = 20) -> tuple[float, float]:
    import io

    pil, ours = [], []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        PILImage.fromarray(image).save(io.BytesIO(), format="PNG")
        pil.append(time.perf_counter_ns() - t0)
        t0 = time.perf_counter_ns()
        encoders.encode_png(image, width=256, height=256, channels=3)
        ours.append(time.perf_counter_ns() - t0)
    return median_us(pil), median_us(ours)


def deliver(url: str, jdir: str) -> tuple[float, float]:
    """(seconds, peak RSS MB) of ``plutosync run --once`` on the journal."""
    env = {**os.environ, "PLUTO_API_KEY": API_KEY}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "syncd", "run", "--dir", jdir, "--server",
                             url, "--once", "--quiet"], env=env)
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, ps.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.02)
    if proc.returncode != 0:
        raise SystemExit(f"plutosync exited {proc.returncode}")
    return time.perf_counter() - start, peak / 2**20


def raw_put(url: str, path: str) -> float:
    """Seconds for one presign and a streamed PUT of ``path`` to the same server."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    run = requests.post(f"{url}/api/runs/create", headers=headers, timeout=30,
                        json={"runName": "raw", "projectName": "bench-raw"}).json()
    start = time.perf_counter()
    size = os.path.getsize(path)
    answer = requests.post(f"{url}/files", timeout=30, headers={
        **headers, "X-Run-Id": str(run["runId"]), "X-Project-Name": "bench-raw"}, json={
        "files": [{"fileName": "raw.pt", "logName": "raw", "fileSize": size, "fileType": "pt",
                   "step": 0, "time": 0, "sampleIndex": 0}]}).json()
    target = answer["raw"][0]["raw.pt"]
    with open(path, "rb") as f:
        resp = requests.put(target, data=f, timeout=600,
                            headers={"Content-Type": "application/octet-stream"})
    resp.raise_for_status()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--artifact-mb", type=int, default=256)
    ap.add_argument("--artifact-logs", type=int, default=20)
    args = ap.parse_args()
    os.environ["PLUTO_OFFLINE_AUTOSTART"] = "0"
    image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory(prefix="bench-media-") as tmp:
        server, url = start_server(os.path.join(tmp, "server"), API_KEY)
        try:
            image_us, staged_s = images(os.path.join(tmp, "img"), args.images, image)
            stock_us = stock_images(url, args.images, os.path.join(tmp, "home"))
            pil_us, ours_us = encode_us(image)
            big = os.path.join(tmp, "model.pt")
            with open(big, "wb") as f:
                for _ in range(args.artifact_mb):
                    f.write(os.urandom(1 << 20))
            artifact_us = artifacts(os.path.join(tmp, "art"), big, 1)
            many_us = artifacts(os.path.join(tmp, "many"), big, args.artifact_logs)
            seconds, rss = deliver(url, os.path.join(tmp, "art"))
            raw_s = raw_put(url, big)
        finally:
            server.terminate()
            server.wait(30)
    figures = {
        "image_log_us": image_us, "stock_image_log_us": stock_us, "png_encode_us": pil_us,
        "stdlib_png_encode_us": ours_us, "images_staged_after_finish_s": round(staged_s, 2),
        "artifact_log_us": artifact_us, "artifact_log_median_of_n_us": many_us,
        "artifact_mb": args.artifact_mb,
        "upload_mb_per_s": round(args.artifact_mb / seconds, 1),
        "raw_put_mb_per_s": round(args.artifact_mb / raw_s, 1), "daemon_rss_mb": round(rss, 1),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
