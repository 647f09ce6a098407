"""Check, with the stock Pluto client (pluto-ml's ``pluto.query``), what the server holds.

Used by scripts/demo after plutosync has delivered the journal:

    PLUTO_URL_API=http://127.0.0.1:3001 PLUTO_API_KEY=... python scripts/examples/check.py \
        --project demo-project --steps 1000

Exits 1, saying what differs, when the server does not hold exactly what the jobs logged.
"""

from __future__ import annotations

import argparse
import sys

from pluto import query


def _points(client: query.Client, project: str, run_id: int, name: str) -> list[dict]:
    rows = client.get_metrics(project, run_id, metric_names=[name], limit=100_000)
    if hasattr(rows, "to_dict"):  # a DataFrame when pandas is installed
        rows = rows.to_dict("records")
    return list(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--project", default="demo-project")
    ap.add_argument("--steps", type=int, default=1000)
    args = ap.parse_args()

    client = query.Client()
    runs = client.list_runs(args.project)
    if len(runs) != 1:
        print(f"check: expected 1 run in {args.project!r}, the server has {len(runs)}")
        return 1
    run = client.get_run(args.project, runs[0]["id"])
    loss = _points(client, args.project, run["id"], "train/loss")
    acc = _points(client, args.project, run["id"], "eval/accuracy")
    problems = []
    if run["status"] != "COMPLETED":
        problems.append(f"status is {run['status']}, expected COMPLETED")
    if sorted(p["step"] for p in loss) != list(range(1, args.steps + 1)):
        problems.append(f"train/loss has {len(loss)} points, expected steps 1..{args.steps}")
    if len(acc) != 10:
        problems.append(f"eval/accuracy has {len(acc)} points, expected 10")
    config = run.get("config") or {}
    if config.get("optimizer") != {"name": "sgd", "momentum": 0.95}:
        problems.append(f"config.optimizer is {config.get('optimizer')}, expected the merged update")
    if set(run.get("tags") or []) != {"baseline", "offline", "lr-decay"}:
        problems.append(f"tags are {run.get('tags')}")

    print(f"server run {run['displayId']} (id {run['id']}): status {run['status']}")
    print(f"  train/loss: {len(loss)} points, eval/accuracy: {len(acc)} points")
    print(f"  config: {config}")
    print(f"  tags: {sorted(run.get('tags') or [])}")
    for p in problems:
        print(f"check: {p}")
    print("check: the server holds exactly what the jobs logged" if not problems else "check: FAILED")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
