"""Task dependencies at scale on a real `kiln serve`, driven by the azure-batch SDK.

Starts an EmbeddedServer (temp data dir) with a pool of 2 nodes x 4 slots, then:

* chain: one job with usesTaskDependencies, N `/bin/true` tasks where task i depends on task i-1
  (dependsOn.taskIds), added with create_task_collection, 100 per call, in order. Reports the add time
  (and the mean time per call over the first and the last tenth of the calls: flat means adding does not
  slow down as the graph grows), the time until the last link completed, and the hand-over per link:
  the median of (start of link i - end of link i-1) from the server's executionInfo times, beside the
  median run of a link on its node (start to end: dispatch, process, result).
* fan-in: one job, M `/bin/true` parents with ids "1".."M" and one "merge" task that depends on them
  through one taskIdRange [1, M], added 100 per call with the merge task in the first call. Reports the
  add time, the time until merge completed, and merge's start - the last parent's end.

* adding alone (`--add-only N`, on a pool with no nodes, so nothing runs while tasks are added): the
  mean time per call over the first and the last tenth of N tasks for a job without dependencies, a
  chain and a fan-in, so the cost of indexing dependencies shows apart from the cost of running tasks.

Prints figures; asserts nothing about speed.

    python bench/dependencies.py [--chain 10000] [--fan-in 10000] [--add-only 10000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from azure.batch import BatchClient, models

from kiln.cli.embedded import EmbeddedServer
from kiln.testing import create_pool_and_wait, make_client, unique, wait_task_counts

NODES, SLOTS = 2, 4
CHUNK = 100
Task = models.BatchTaskCreateOptions


def _job(client: BatchClient, pool_id: str) -> str:
    job_id = unique("bench-deps")
    client.create_job(
        models.BatchJobCreateOptions(
            id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id), uses_task_dependencies=True
        )
    )
    return job_id


def _add(client: BatchClient, job_id: str, tasks: list[Task]) -> list[float]:
    """Add in calls of CHUNK; returns the seconds each call took."""
    calls = []
    for i in range(0, len(tasks), CHUNK):
        began = time.perf_counter()
        result = client.create_task_collection(job_id, models.BatchTaskGroup(task_values=tasks[i : i + CHUNK]))
        calls.append(time.perf_counter() - began)
        failed = [r for r in result.result_values if r.status != "success"]
        if failed:
            raise RuntimeError(f"adding tasks failed: {failed[0].task_id}: {failed[0].error}")
    return calls


def _tenths(calls: list[float]) -> tuple[float, float]:
    tenth = max(1, len(calls) // 10)
    return statistics.mean(calls[:tenth]) * 1000, statistics.mean(calls[-tenth:]) * 1000


def chain(client: BatchClient, pool_id: str, n: int, timeout: float) -> None:
    job_id = _job(client, pool_id)
    tasks = [
        Task(
            id=f"link{i}",
            command_line="/bin/true",
            depends_on=models.BatchTaskDependencies(task_ids=[f"link{i - 1}"]) if i else None,
        )
        for i in range(n)
    ]
    began = time.perf_counter()
    calls = _add(client, job_id, tasks)
    added = time.perf_counter() - began
    wait_task_counts(client, job_id, n, timeout, poll=0.5, start=began)
    done = time.perf_counter() - began
    rows = {t.id: t for t in client.list_tasks(job_id, select=["id", "executionInfo"])}
    gaps = [
        (rows[f"link{i}"].execution_info.start_time - rows[f"link{i - 1}"].execution_info.end_time).total_seconds()
        * 1000
        for i in range(1, n)
    ]
    runs = [(t.execution_info.end_time - t.execution_info.start_time).total_seconds() * 1000 for t in rows.values()]
    failed = sum(r.execution_info.result != "success" for r in rows.values())
    first, last = _tenths(calls)
    print(
        f"chain of {n}: added in {added:.1f} s ({n / added:.0f} tasks/s; per call {first:.1f} ms in the first "
        f"tenth, {last:.1f} ms in the last); all completed {done:.1f} s after the first add "
        f"({n / done:.1f} links/s); hand-over per link p50 {statistics.median(gaps):.1f} ms, "
        f"p95 {statistics.quantiles(gaps, n=20)[-1]:.1f} ms (the rest of a link is its run on the node, dispatch to "
        f"result: p50 {statistics.median(runs):.1f} ms); failures {failed}"
    )


def fan_in(client: BatchClient, pool_id: str, m: int, timeout: float) -> None:
    job_id = _job(client, pool_id)
    merge = Task(
        id="merge",
        command_line="/bin/true",
        depends_on=models.BatchTaskDependencies(task_id_ranges=[models.BatchTaskIdRange(start=1, end=m)]),
    )
    tasks = [merge] + [Task(id=str(i), command_line="/bin/true") for i in range(1, m + 1)]
    began = time.perf_counter()
    calls = _add(client, job_id, tasks)
    added = time.perf_counter() - began
    wait_task_counts(client, job_id, m + 1, timeout, poll=0.5, start=began)
    done = time.perf_counter() - began
    rows = list(client.list_tasks(job_id, select=["id", "executionInfo"]))
    last_parent = max(t.execution_info.end_time for t in rows if t.id != "merge")
    merged = next(t for t in rows if t.id == "merge").execution_info
    first, last = _tenths(calls)
    print(
        f"fan-in of {m} through one range: added in {added:.1f} s ({(m + 1) / added:.0f} tasks/s; per call "
        f"{first:.1f} ms in the first tenth, {last:.1f} ms in the last); merge completed {done:.1f} s after the "
        f"first add; merge started {(merged.start_time - last_parent).total_seconds() * 1000:.1f} ms after the "
        f"last parent ended; merge result {merged.result}"
    )


def add_only(client: BatchClient, n: int) -> None:
    pool_id = create_pool_and_wait(client, nodes=0, pool_id=unique("bench-empty"))
    shapes = {
        "no dependencies": ([Task(id=f"t{i}", command_line="/bin/true") for i in range(n)], False),
        "chain": (
            [
                Task(
                    id=f"link{i}",
                    command_line="/bin/true",
                    depends_on=models.BatchTaskDependencies(task_ids=[f"link{i - 1}"]) if i else None,
                )
                for i in range(n)
            ],
            True,
        ),
        "fan-in": (
            [
                Task(
                    id="merge",
                    command_line="/bin/true",
                    depends_on=models.BatchTaskDependencies(task_id_ranges=[models.BatchTaskIdRange(start=1, end=n)]),
                )
            ]
            + [Task(id=str(i), command_line="/bin/true") for i in range(1, n + 1)],
            True,
        ),
    }
    for name, (tasks, uses) in shapes.items():
        job_id = unique("bench-add")
        client.create_job(
            models.BatchJobCreateOptions(
                id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id), uses_task_dependencies=uses
            )
        )
        calls = _add(client, job_id, tasks)
        first, last = _tenths(calls)
        print(
            f"adding {len(tasks)} tasks, {name}, nothing running: {sum(calls):.1f} s; per call {first:.1f} ms "
            f"in the first tenth, {last:.1f} ms in the last"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chain", type=int, default=10_000)
    parser.add_argument("--fan-in", type=int, default=10_000)
    parser.add_argument("--add-only", type=int, default=10_000)
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="kiln-bench-deps-"))
    os.chmod(data, 0o755)  # task accounts must pass through the data dir
    server = EmbeddedServer(data / "kiln").start()
    try:
        client = make_client(server)
        pool_id = create_pool_and_wait(client, nodes=NODES, slots=SLOTS)
        print(f"pool: {NODES} nodes x {SLOTS} slots; cores: {os.cpu_count()}")
        if args.chain:
            chain(client, pool_id, args.chain, args.timeout)
        if args.fan_in:
            fan_in(client, pool_id, args.fan_in, args.timeout)
        if args.add_only:
            add_only(client, args.add_only)
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
