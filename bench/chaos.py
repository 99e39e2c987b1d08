"""Chaos benchmark (issue 20): 1,000 tasks on 2 nodes x 4 slots while the server is SIGKILLed 10 times and a
node worker 3 times, at moments the tasks' progress picks (kiln.testing_chaos). Prints the tasks lost, those
run twice at once, those whose runs were not all counted, and the store's integrity: the target is 0, 0, 0, ok.
Needs root (tasks run as accounts of their own) and `flock`.

    python bench/chaos.py [--tasks 1000] [--server-kills 10] [--worker-kills 3] [--seed 20] [--no-ahead]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from kiln.compute.node import identity
from kiln.testing_chaos import Plan, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--server-kills", type=int, default=10)
    parser.add_argument("--worker-kills", type=int, default=3)
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--no-ahead", action="store_true", help="set maxParallelTasks: no task is sent ahead")
    args = parser.parse_args()
    plan = Plan(
        tasks=args.tasks,
        server_kills=args.server_kills,
        worker_kills=args.worker_kills,
        seed=args.seed,
        max_parallel_tasks=args.tasks if args.no_ahead else None,
    )
    base = Path(tempfile.mkdtemp(prefix="kiln-chaos-"))
    os.chmod(base, 0o755)  # task accounts pass through it
    marks = base / "marks"
    marks.mkdir()
    os.chmod(marks, 0o1777)
    os.environ.setdefault(identity.REGISTRY_ENV, str(base / "uids"))
    began = time.monotonic()
    try:
        outcome = run(plan, base / "kiln", marks, log=print)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"{plan.tasks} tasks, {outcome.runs} runs, kills {outcome.kills}, {time.monotonic() - began:.0f} s")
    print(f"lost {len(outcome.lost)} {outcome.lost[:10]}")
    print(f"run twice at once {len(outcome.run_twice_at_once)} {outcome.run_twice_at_once[:10]}")
    print(f"runs not counted {len(outcome.runs_not_counted)} {outcome.runs_not_counted[:10]}")
    print(f"store integrity {outcome.integrity}")


if __name__ == "__main__":
    main()
