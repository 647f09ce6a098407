"""An evaluation job attached to a live training run: resume, log, close().

close() (not finish()) so that this job's exit leaves the run RUNNING for its trainer.

    python scripts/examples/evaluate.py RUN_ID PROJECT
"""

from __future__ import annotations

import sys

import pluto_offline as pluto


def main() -> None:
    run_id, project = sys.argv[1], sys.argv[2]
    run = pluto.init(project=project, run_id=run_id, resume=True)
    for i in range(10):
        run.log({"eval/accuracy": 0.5 + i * 0.03}, step=i)
    run.close()
    print(f"eval: logged 10 eval steps into run {run_id} and closed it")


if __name__ == "__main__":
    main()
