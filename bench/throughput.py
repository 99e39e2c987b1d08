"""Task throughput and dispatch latency of a real `kiln serve`, driven by the azure-batch SDK.

Starts an EmbeddedServer (temp data dir) with a pool of 2 nodes x 4 slots, then:

* throughput: one job, N `/bin/true` tasks added with create_task_collection, 100 per call
  (sequentially by default; `--add-threads` for a few threads), timed from just before the first add
  (client clock) to the latest executionInfo.endTime (server clock, same host). Completion is detected
  by polling get_job_task_counts, and one final list_tasks reads the end times and exit codes.
* baseline, in the same run, right before and right after each throughput repeat: bare
  subprocess.run(["/bin/true"]) N times on 4 threads, the two rates averaged (these machines' speed drifts
  by 10-20% within a minute); the ratio Kiln / bare is what the target is set on (>= 0.25).
* dispatch latency on idle nodes: tasks added one at a time with create_task, each after the previous
  one has completed (so every slot is free); latency = executionInfo.startTime - creationTime, both as
  the server recorded them (read back with get_task). Target p50 <= 50 ms.

Prints figures and PASS/MISS against the targets; asserts nothing about speed.

Each task makes four inodes on the nodes' file system (its directory, wd/, stdout.txt, stderr.txt);
bare spawning makes none. On ext4 without a journal (these machines' root file system) an inode is
cheap (~60 us) unless many were deleted in the last minutes: the allocator then skips each recently
deleted one, and a create costs 0.2-0.7 ms (measured). A run started within ~6 minutes of deleting
many files there (an earlier run's temp dir, a test suite) is slower for it; `--dir /dev/shm` takes
the file system out of the comparison.

    python bench/throughput.py [--tasks 10000] [--repeat 1] [--latency-tasks 200] [--add-threads 1] [--dir DIR]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
from azure.batch import BatchClient, models

from kiln.cli.embedded import EmbeddedServer
from kiln.testing import create_pool_and_wait, make_client, terminate_job, unique, wait_task_counts

NODES, SLOTS = 2, 4
TARGET_RATIO = 0.25
TARGET_P50_MS = 50.0


# ---------------------------------------------------------------------------------------------- baseline
def bare(commands: int, threads: int = 4) -> float:
    """Commands per second of subprocess.run(["/bin/true"]) in a thread pool."""
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda _: subprocess.run(["/bin/true"], check=True), range(commands)))
    return commands / (time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------- CPU accounting
class CpuMeter:
    """CPU seconds of the server process and of its descendants (the node workers and, through
    children_user/system, the commands they have reaped)."""

    def __init__(self, pid: int) -> None:
        self.server = psutil.Process(pid)

    def sample(self) -> tuple[float, float]:
        own = self.server.cpu_times()
        nodes = 0.0
        for child in self.server.children(recursive=True):
            try:
                t = child.cpu_times()
                nodes += t.user + t.system + t.children_user + t.children_system
            except psutil.NoSuchProcess:
                pass
        return own.user + own.system, nodes


# ---------------------------------------------------------------------------------------------- throughput
@dataclass
class Throughput:
    tasks: int
    seconds: float  #: first add (client clock) -> last endTime (server clock)
    add_seconds: float  #: first add -> last add answered
    seen_seconds: float  #: first add -> task counts showed all completed
    list_seconds: float  #: the final list_tasks (all pages)
    done_while_adding: int  #: tasks whose endTime is before the last add was answered
    succeeded: int
    failed: int
    cpu_server: float  #: CPU seconds of the server process during the run
    cpu_nodes: float  #: CPU seconds of the node workers (and their commands) during the run

    @property
    def rate(self) -> float:
        return self.tasks / self.seconds

    @property
    def rate_after_adds(self) -> float:
        """Tasks/s from the last add to the last completion: execution alone, adds no longer competing."""
        left = self.seconds - self.add_seconds
        return (self.tasks - self.done_while_adding) / left if left > 0 else float("nan")


def add_collections(
    client: BatchClient, job_id: str, groups: list[list[models.BatchTaskCreateOptions]], threads: int
) -> None:
    def add(group: list[models.BatchTaskCreateOptions]) -> None:
        result = client.create_task_collection(job_id, models.BatchTaskGroup(task_values=group))
        bad = [r for r in result.result_values if r.status != "success"]
        if bad:
            raise RuntimeError(f"{len(bad)} tasks not added, first: {bad[0].task_id} {bad[0].status} {bad[0].error}")

    if threads <= 1:
        for group in groups:
            add(group)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(add, groups))


def run_throughput(
    client: BatchClient,
    pool_id: str,
    n: int,
    per_call: int,
    threads: int,
    poll: float,
    timeout: float,
    meter: CpuMeter,
    command: str = "/bin/true",
) -> Throughput:
    job_id = unique("tput")
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id)))
    groups = [
        [
            models.BatchTaskCreateOptions(id=f"t{i:06d}", command_line=command)
            for i in range(start, min(start + per_call, n))
        ]
        for start in range(0, n, per_call)
    ]
    cpu_before = meter.sample()
    began = datetime.now(UTC)
    t0 = time.perf_counter()
    add_collections(client, job_id, groups, threads)
    added = time.perf_counter() - t0
    wait_task_counts(client, job_id, n, timeout, poll, clock=time.perf_counter, start=t0)
    seen = time.perf_counter() - t0
    cpu_after = meter.sample()
    t1 = time.perf_counter()
    tasks = list(client.list_tasks(job_id, select=["id", "state", "executionInfo"], max_results=1000))
    listed = time.perf_counter() - t1
    if len(tasks) != n:
        raise RuntimeError(f"listed {len(tasks)} tasks, expected {n}")
    last_end = max(t.execution_info.end_time for t in tasks)
    adds_done = began + timedelta(seconds=added)
    done_while_adding = sum(t.execution_info.end_time <= adds_done for t in tasks)
    succeeded = sum(
        t.state == "completed" and t.execution_info.exit_code == 0 and t.execution_info.failure_info is None
        for t in tasks
    )
    terminate_job(client, job_id)  # keep the scheduler's set of open jobs small for the next repeat
    return Throughput(
        n,
        (last_end - began).total_seconds(),
        added,
        seen,
        listed,
        done_while_adding,
        succeeded,
        n - succeeded,
        cpu_after[0] - cpu_before[0],
        cpu_after[1] - cpu_before[1],
    )


def warm_up(client: BatchClient, pool_id: str, n: int = 100) -> None:
    """First-use costs (imports on the nodes, first directories) out of the measured runs."""
    job_id = unique("warm")
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id)))
    client.create_task_collection(
        job_id,
        models.BatchTaskGroup(
            task_values=[models.BatchTaskCreateOptions(id=f"w{i}", command_line="/bin/true") for i in range(n)]
        ),
    )
    deadline = time.monotonic() + 120
    while client.get_job_task_counts(job_id).task_counts.completed < n:
        if time.monotonic() > deadline:
            raise TimeoutError("warm-up tasks did not complete")
        time.sleep(0.1)
    failed = [t for t in client.list_tasks(job_id) if t.execution_info.exit_code != 0]
    if failed:  # no point measuring 10,000 failures
        info = failed[0].execution_info
        raise RuntimeError(
            f"{len(failed)} of {n} warm-up tasks failed; first: exit code {info.exit_code}, {info.failure_info}"
        )
    terminate_job(client, job_id)


# ---------------------------------------------------------------------------------------------- latency
@dataclass
class Latency:
    dispatch_ms: list[float]  #: creationTime -> executionInfo.startTime (server clock)
    add_ms: list[float]  #: create_task round trip (client clock)


def run_latency(client: BatchClient, pool_id: str, n: int, command: str, poll: float) -> Latency:
    job_id = unique("lat")
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id)))
    dispatch, adds = [], []
    for i in range(n):
        task_id = f"l{i:05d}"
        t0 = time.perf_counter()
        client.create_task(job_id, models.BatchTaskCreateOptions(id=task_id, command_line=command))
        adds.append((time.perf_counter() - t0) * 1000)
        deadline = time.monotonic() + 60
        while True:  # wait for completion, so the next task finds every slot free
            time.sleep(poll)
            task = client.get_task(job_id, task_id, select=["id", "state", "creationTime", "executionInfo"])
            if task.state == "completed":
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"latency task {task_id} did not complete (state {task.state})")
        if task.execution_info.exit_code != 0:
            raise RuntimeError(f"latency task {task_id} exited with {task.execution_info.exit_code}")
        dispatch.append((task.execution_info.start_time - task.creation_time).total_seconds() * 1000)
    terminate_job(client, job_id)
    return Latency(dispatch, adds)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(q / 100 * len(ordered)))) - 1]


def filesystem(path: Path) -> str:
    """The type of the file system path is on (the mount point with the longest matching prefix)."""
    mounts = [p for p in psutil.disk_partitions(all=True) if str(path).startswith(p.mountpoint.rstrip("/") + "/")]
    return max(mounts, key=lambda p: len(p.mountpoint)).fstype if mounts else "an unknown file system"


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks per throughput run (and bare commands)")
    parser.add_argument("--per-call", type=int, default=100, help="tasks per create_task_collection call")
    parser.add_argument("--add-threads", type=int, default=1, help="threads adding collections (1 = sequential)")
    parser.add_argument("--repeat", type=int, default=1, help="throughput repeats; medians are reported")
    parser.add_argument("--latency-tasks", type=int, default=200)
    parser.add_argument("--latency-command", default="/bin/true")
    parser.add_argument("--bare-threads", type=int, default=4)
    parser.add_argument(
        "--poll",
        type=float,
        default=1.0,
        help="seconds between task-count polls (each is a GROUP BY over the job's tasks, on the "
        "server's one store thread: polling often slows the run it measures)",
    )
    parser.add_argument("--timeout", type=float, default=1800, help="bound of one throughput run, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (server log, database)")
    parser.add_argument(
        "--dir",
        default=None,
        help="where the temp dir goes (default: the system's temp dir); "
        "each task makes four inodes there, see the module docstring",
    )
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="kiln-bench-throughput-", dir=args.dir))
    print(f"data dir {tmp} on {filesystem(tmp)}")
    # Run as root, nodes run non-admin tasks as accounts of their own, which must pass through the data
    # dir (mkdtemp makes it 0700); their uid claims go to a registry of ours instead of the host-wide one.
    os.chmod(tmp, 0o755)
    os.environ.setdefault("KILN_UID_REGISTRY", str(tmp / "uids"))
    server = EmbeddedServer(tmp / "data")
    client: BatchClient | None = None
    runs: list[tuple[float, Throughput]] = []
    latency: Latency | None = None
    try:
        t = time.perf_counter()
        server.start()
        client = make_client(server)
        pool_id = create_pool_and_wait(client, nodes=NODES, slots=SLOTS)
        print(
            f"server pid {server.process.pid} at {server.endpoint}; pool {pool_id} of {NODES} nodes x {SLOTS} "
            f"slots idle {time.perf_counter() - t:.1f} s after start"
        )
        warm_up(client, pool_id)
        meter = CpuMeter(server.process.pid)
        adding = "sequentially" if args.add_threads <= 1 else f"from {args.add_threads} threads"
        for i in range(args.repeat):
            before = bare(args.tasks, args.bare_threads)
            run = run_throughput(
                client, pool_id, args.tasks, args.per_call, args.add_threads, args.poll, args.timeout, meter
            )
            after = bare(args.tasks, args.bare_threads)
            base = (before + after) / 2
            runs.append((base, run))
            print(
                f"run {i + 1}/{args.repeat}: bare {base:.0f} commands/s ({before:.0f} before, {after:.0f} after); "
                f"kiln {run.rate:.1f} tasks/s "
                f"({run.tasks} tasks in {run.seconds:.2f} s), ratio {run.rate / base:.3f}; "
                f"succeeded {run.succeeded}, failed {run.failed}\n"
                f"    all added after {run.add_seconds:.2f} s ({args.per_call} per call, {adding}), "
                f"{run.done_while_adding} completed by then, {run.rate_after_adds:.1f} tasks/s after; "
                f"task counts showed all done after {run.seen_seconds:.2f} s; final list took "
                f"{run.list_seconds:.2f} s\n"
                f"    CPU per task: server process {run.cpu_server / run.tasks * 1e6:.0f} us, "
                f"node workers and their commands {run.cpu_nodes / run.tasks * 1e6:.0f} us"
            )
        if args.latency_tasks:
            latency = run_latency(client, pool_id, args.latency_tasks, args.latency_command, poll=0.01)
    finally:
        if client is not None:
            client.close()
        code = server.stop()
        print(f"server stopped (exit code {code})")
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(
        f"Kiln throughput benchmark: {NODES} nodes x {SLOTS} slots, {os.cpu_count()} CPUs, "
        f"load average now {os.getloadavg()[0]:.2f}"
    )
    rows: list[tuple[str, str, str, str]] = []
    if runs:
        base = statistics.median(b for b, _ in runs)
        rate = statistics.median(r.rate for _, r in runs)
        ratio = statistics.median(r.rate / b for b, r in runs)
        failed = sum(r.failed for _, r in runs)
        n = f"median of {len(runs)}" if len(runs) > 1 else "1 run"
        rows += [
            (f"bare subprocess.run, {args.bare_threads} threads", f"{base:,.0f} commands/s", n, ""),
            (
                f"kiln, {args.tasks:,} x /bin/true",
                f"{rate:,.1f} tasks/s",
                n,
                f"{sum(r.succeeded for _, r in runs):,} succeeded, {failed} failed",
            ),
            (
                "ratio kiln / bare",
                f"{ratio:.3f}",
                f"target >= {TARGET_RATIO}",
                "PASS" if ratio >= TARGET_RATIO else "MISS",
            ),
            (
                f"  time to add all tasks ({args.per_call}/call, {adding})",
                f"{statistics.median(r.add_seconds for _, r in runs):.1f} s",
                n,
                "",
            ),
            (
                "  kiln after the last add",
                f"{statistics.median(r.rate_after_adds for _, r in runs):,.1f} tasks/s",
                n,
                "",
            ),
            (
                "  CPU per task, server / nodes",
                f"{statistics.median(r.cpu_server for _, r in runs) / args.tasks * 1e3:.1f} / "
                f"{statistics.median(r.cpu_nodes for _, r in runs) / args.tasks * 1e3:.1f} ms",
                n,
                "",
            ),
        ]
    if latency:
        d = latency.dispatch_ms
        p50, p95 = percentile(d, 50), percentile(d, 95)
        rows += [
            (
                f"dispatch latency p50 ({len(d)} tasks, idle nodes)",
                f"{p50:.1f} ms",
                f"target <= {TARGET_P50_MS:.0f} ms",
                "PASS" if p50 <= TARGET_P50_MS else "MISS",
            ),
            ("dispatch latency p95", f"{p95:.1f} ms", "", ""),
            ("dispatch latency max", f"{max(d):.1f} ms", "", ""),
            ("create_task round trip p50 (client)", f"{percentile(latency.add_ms, 50):.1f} ms", "", ""),
        ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)] if rows else [0] * 4
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    if any(r.failed for _, r in runs):
        print("WARNING: some tasks did not succeed")


if __name__ == "__main__":
    main()
