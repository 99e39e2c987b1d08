"""One job grown to N tasks on a real `kiln serve`, driven by the azure-batch SDK: how reads cost as it grows.

The job's pool has no nodes, so every task stays active (the store holds N rows, the scheduler's queue N
entries). At each checkpoint (N/4, N/2, N by default) it measures, over loopback:

* add rate: tasks per second to reach the checkpoint, collections of 100 on 4 client threads;
* get_job_task_counts: p50/p99 of --samples calls;
* list_tasks page 1 and page 50 (pages of 100: page 50 starts at task 4,901), each page walk timed
  page by page, --walks walks: p50/p99 of the page-1 and page-50 requests;
* list_tasks first page with $filter=state eq 'active' (every task) and state eq 'completed' (none),
  --samples calls each.

`--src DIR` (repeatable) runs the server from each source tree in turn (PYTHONPATH), `--rounds` times,
alternating, so before and after are measured side by side on this machine's drifting speed:

    python bench/scale.py --tasks 20000 --src /work/main/src --src src --rounds 2

Prints one table row per (source, round, checkpoint); asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from azure.batch import BatchClient, models

from kiln.cli.embedded import EmbeddedServer
from kiln.testing import create_pool_and_wait, make_client

JOB = "scale"
COLLECTION = 100
ADD_THREADS = 4
PAGE = 100
FAR_PAGE = 50


def timed(call: Callable[[], Any]) -> float:
    """Milliseconds one call takes."""
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1000


def percentiles(samples: list[float | None]) -> str:
    ordered = sorted(s for s in samples if s is not None)
    if not ordered:
        return f"{'-':>7} {'-':>7}"
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return f"{statistics.median(ordered):7.1f} {p99:7.1f}"


def add_tasks(client: BatchClient, start: int, stop: int) -> float:
    """Tasks start..stop-1 in collections on ADD_THREADS threads; tasks per second."""

    def add(first: int) -> None:
        specs = [
            models.BatchTaskCreateOptions(id=f"t{i:07d}", command_line="/bin/true")
            for i in range(first, min(first + COLLECTION, stop))
        ]
        client.create_task_collection(JOB, models.BatchTaskGroup(task_values=specs))

    began = time.perf_counter()
    with ThreadPoolExecutor(ADD_THREADS) as pool:
        list(pool.map(add, range(start, stop, COLLECTION)))
    return (stop - start) / (time.perf_counter() - began)


def page_walk(client: BatchClient) -> tuple[float, float | None]:
    """(ms of page 1, ms of page FAR_PAGE or None if the job has fewer) of one walk through the job's pages."""
    pages = client.list_tasks(JOB, max_results=PAGE).by_page()
    times = []
    for _ in range(FAR_PAGE):
        start = time.perf_counter()
        if next(pages, None) is None:
            break
        times.append((time.perf_counter() - start) * 1000)
    return times[0], times[FAR_PAGE - 1] if len(times) == FAR_PAGE else None


def measure(client: BatchClient, samples: int, walks: int) -> dict[str, str]:
    counts = [timed(lambda: client.get_job_task_counts(JOB)) for _ in range(samples)]
    walked = [page_walk(client) for _ in range(walks)]
    figures = {
        "counts": percentiles(counts),
        "page1": percentiles([w[0] for w in walked]),
        f"page{FAR_PAGE}": percentiles([w[1] for w in walked]),
    }
    for state in ("active", "completed"):

        def first_page(text: str = f"state eq '{state}'") -> None:
            next(client.list_tasks(JOB, max_results=PAGE, filter=text).by_page())

        first = [timed(first_page) for _ in range(samples)]
        figures[f"filter {state}"] = percentiles(first)
    return figures


def run(src: str, tasks: int, checkpoints: list[int], samples: int, walks: int, directory: str | None) -> list[str]:
    lines = []
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        os.environ["PYTHONPATH"] = os.path.abspath(src)  # the server subprocess runs this tree
        server = EmbeddedServer(Path(tmp) / "data").start()
        try:
            client = make_client(server)
            pool_id = create_pool_and_wait(client, nodes=0)
            client.create_job(models.BatchJobCreateOptions(id=JOB, pool_info=models.BatchPoolInfo(pool_id=pool_id)))
            added = 0
            for checkpoint in checkpoints:
                rate = add_tasks(client, added, checkpoint)
                added = checkpoint
                figures = measure(client, samples, walks)
                lines.append(f"{src:24} {checkpoint:8} {rate:8.0f} " + " ".join(figures.values()))
                print(lines[-1], flush=True)
        finally:
            server.stop()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--checkpoints", type=int, default=3, help="measure at N/c, 2N/c, ... N")
    parser.add_argument("--samples", type=int, default=20, help="calls per count and filter figure")
    parser.add_argument("--walks", type=int, default=3, help="page walks per page-1/page-50 figure")
    parser.add_argument("--src", action="append", help="source tree(s) to run the server from, alternating")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--dir", help="where the temporary data dirs go")
    args = parser.parse_args()
    checkpoints = [args.tasks * (i + 1) // args.checkpoints // COLLECTION * COLLECTION for i in range(args.checkpoints)]
    sources = args.src or [str(Path(__file__).resolve().parents[1] / "src")]
    header = "p50/p99 ms: counts, page 1, page 50, filter active, filter completed (first page, 100 per page)"
    print(f"{'source':24} {'tasks':>8} {'add/s':>8}  {header}", flush=True)
    for _ in range(args.rounds):
        for src in sources:
            run(src, args.tasks, checkpoints, args.samples, args.walks, args.dir)


if __name__ == "__main__":
    main()
