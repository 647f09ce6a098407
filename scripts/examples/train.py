"""An example training job that logs offline with pluto_offline.

It never talks to the network: every call lands in the journal (PLUTO_DIR) and returns.
Halfway through it runs an evaluation job (examples/evaluate.py) that attaches to this run,
logs its own metrics and close()s, which leaves the run's state alone.

    PLUTO_DIR=/tmp/journal python scripts/examples/train.py --steps 1000
"""

from __future__ import annotations

import argparse
import math
import random
import subprocess
import sys
from pathlib import Path

import pluto_offline as pluto


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--project", default="demo-project")
    ap.add_argument("--run-id", default=None, help="the run's client-side id (default: generated)")
    args = ap.parse_args()

    run = pluto.init(
        project=args.project,
        name="resnet-baseline",
        run_id=args.run_id,
        config={"lr": 0.1, "optimizer": {"name": "sgd", "momentum": 0.9}, "epochs": 4},
        tags=["baseline", "offline"],
    )
    print(f"train: run_id={run.run_id} (server id: {run.id}, not created yet)")
    rng = random.Random(0)
    for step in range(args.steps):
        loss = 2.0 * math.exp(-step / 300) + rng.random() * 0.05
        run.log({"train/loss": loss, "train/lr": 0.1 * (0.5 ** (step // 250))})
        if step == args.steps // 2:
            run.update_config({"optimizer": {"momentum": 0.95}})
            run.add_tags("lr-decay")
            evaluator = Path(__file__).with_name("evaluate.py")
            subprocess.run([sys.executable, str(evaluator), run.run_id, args.project], check=True)
    run.finish()
    print(f"train: logged {args.steps} steps, finished (COMPLETED once delivered)")


if __name__ == "__main__":
    main()
