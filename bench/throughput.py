"""Task throughput and dispatch latency of a real `kiln serve`, driven by the azure-batch SDK.

Starts an EmbeddedServer (temp data dir) with a pool of 2 nodes x 4 slots, then:

* throughput: one job, N `/bin/true` tasks added with create_task_collection, 100 per call
  (sequentially by default; `--add-threads` for a few threads), timed from just before the first add
  (client clock) to the latest executionInfo.endTime (server clock, same host). Completion is detected
  by polling get_job_task_counts, and one final list_tasks reads the end times and exit codes.
* baseline, in the same run, right before and right after each throughput repeat: bare
  subprocess.run(["/bin/true"]) N times on 4 threads, the two rates averaged (these machines' speed drifts
  by 10-20% within a minute); the ratio Kiln / bare is what the target is set on (>= 0.5).
* dispatch latency on idle nodes: tasks added one at a time with create_task, each after the previous
  one has completed (so every slot is free); latency = executionInfo.startTime - creationTime, both as
  the server recorded them (read back with get_task). Target p50 <= 50 ms.

Modes (issue 21's targets): `--idle-job` adds a second active job with no tasks to the pool (ratio to bare
>= 0.5 either way); `--sleep 0.1` runs /bin/sleep 0.1 tasks and reports slot efficiency, the tasks' sleep
over the slots' time from the first start to the last end (>= 0.95); `--jobs 1000` spreads the tasks over
1000 jobs (created before the clock starts) and compares the rate with one job of as many tasks run on the
same server just before (>= 0.9); while they run it polls the counts of the job added last only, as it
polls the one job's (polling each of 1,000 jobs in turn as they end cost the client and the server ~1,000
calls beside execution), and checks every job once after. `--queued` adds every task while the pool's nodes
take none (scheduling disabled) and starts the clock and the CPU meters when they are enabled: execution
alone, without the SDK client's adds on the same cores (with `--jobs`, for both runs: 1,000 adds of 10 cost
the client ~0.14 ms of CPU a task more than 100 adds of 100). `--src A --src B` runs each repeat on a fresh
server with its code from A, then B (PYTHONPATH), alternating, so that a drift of the machine's speed falls
on both.

Prints figures and PASS/MISS against the targets; asserts nothing about speed.

Each task makes four inodes on the nodes' file system (its directory, wd/, stdout.txt, stderr.txt);
bare spawning makes none. On ext4 without a journal (these machines' root file system) an inode is
cheap (~60 us) unless many were deleted in the last minutes: the allocator then skips each recently
deleted one, and a create costs 0.2-0.7 ms (measured). A run started within ~6 minutes of deleting
many files there (an earlier run's temp dir, a test suite) is slower for it; `--dir /dev/shm` takes
the file system out of the comparison.

    python bench/throughput.py [--tasks 10000] [--repeat 1] [--latency-tasks 200] [--add-threads 1] [--dir DIR]
        [--idle-job | --sleep 0.1 | --jobs 1000] [--queued] [--src /work/main/src --src src]
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
TARGET_RATIO = 0.5  #: issue 21 (with or without an idle job)
TARGET_EFFICIENCY = 0.95  #: --sleep 0.1
TARGET_MANY_JOBS = 0.9  #: --jobs 1000 (x 10 tasks) vs one job of 10,000
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
    busy_seconds: float  #: first startTime -> last endTime (server clock)
    #: CPU seconds of this process (the SDK client's adds and polls) during the run: on the same cores as Kiln
    cpu_client: float = 0.0

    @property
    def rate(self) -> float:
        return self.tasks / self.seconds

    def slot_efficiency(self, seconds_per_task: float, slots: int) -> float:
        """Share of the slots' time from the first start to the last end spent in the tasks' own sleep."""
        return self.tasks * seconds_per_task / (slots * self.busy_seconds)

    @property
    def rate_after_adds(self) -> float:
        """Tasks/s from the last add to the last completion: execution alone, adds no longer competing."""
        left = self.seconds - self.add_seconds
        return (self.tasks - self.done_while_adding) / left if left > 0 else float("nan")


def add_collections(
    client: BatchClient, groups: list[tuple[str, list[models.BatchTaskCreateOptions]]], threads: int
) -> None:
    def add(job_group: tuple[str, list[models.BatchTaskCreateOptions]]) -> None:
        job_id, group = job_group
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
    jobs: int = 1,
    queued: bool = False,
) -> Throughput:
    """n tasks spread over `jobs` jobs (created before the clock starts), added collection by collection;
    `queued`: added while the pool's nodes take none, the clock started when they are enabled."""
    job_ids = [unique("tput") for _ in range(jobs)]
    for job_id in job_ids:
        client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id)))
    per_job = n // jobs
    groups = [
        (
            job_id,
            [
                models.BatchTaskCreateOptions(id=f"t{i:06d}", command_line=command)
                for i in range(start, min(start + per_call, per_job))
            ],
        )
        for job_id in job_ids
        for start in range(0, per_job, per_call)
    ]
    nodes = [n.id for n in client.list_nodes(pool_id)] if queued else []
    if queued:  # every task added while the nodes take none
        for node_id in nodes:
            client.disable_node_scheduling(
                pool_id, node_id, models.BatchNodeDisableSchedulingOptions(node_disable_scheduling_option="requeue")
            )
        add_collections(client, groups, threads)
    cpu_before, client_before = meter.sample(), time.process_time()
    began = datetime.now(UTC)
    t0 = time.perf_counter()
    if queued:
        for node_id in nodes:
            client.enable_node_scheduling(pool_id, node_id)
    else:
        add_collections(client, groups, threads)
    added = time.perf_counter() - t0
    # one poll per interval while they run, as for one job: of the job added last (equal priorities take turns,
    # so it ends among the last); CPU is counted to there; then every job is checked (a poll each, mostly)
    wait_task_counts(client, job_ids[-1], per_job, timeout, poll, clock=time.perf_counter, start=t0)
    cpu_after, client_after = meter.sample(), time.process_time()
    for job_id in job_ids:
        wait_task_counts(client, job_id, per_job, timeout, poll, clock=time.perf_counter, start=t0)
    seen = time.perf_counter() - t0
    t1 = time.perf_counter()
    tasks = [
        t
        for job_id in job_ids
        for t in client.list_tasks(job_id, select=["id", "state", "executionInfo"], max_results=1000)
    ]
    listed = time.perf_counter() - t1
    if len(tasks) != per_job * jobs:
        raise RuntimeError(f"listed {len(tasks)} tasks, expected {per_job * jobs}")
    last_end = max(t.execution_info.end_time for t in tasks)
    first_start = min(t.execution_info.start_time for t in tasks)
    adds_done = began + timedelta(seconds=added)
    done_while_adding = sum(t.execution_info.end_time <= adds_done for t in tasks)
    succeeded = sum(
        t.state == "completed" and t.execution_info.exit_code == 0 and t.execution_info.failure_info is None
        for t in tasks
    )
    if jobs == 1:  # keep the scheduler's set of open jobs small for the next repeat
        terminate_job(client, job_ids[0])
    return Throughput(
        len(tasks),
        (last_end - began).total_seconds(),
        added,
        seen,
        listed,
        done_while_adding,
        succeeded,
        len(tasks) - succeeded,
        cpu_after[0] - cpu_before[0],
        cpu_after[1] - cpu_before[1],
        (last_end - first_start).total_seconds(),
        client_after - client_before,
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


# ---------------------------------------------------------------------------------------------- one server
@dataclass
class Measured:
    base: float  #: bare commands/s, the mean of right before and right after the run
    run: Throughput
    one_job: Throughput | None = None  #: --jobs: the run of one job of as many tasks, on the same server


def measure(args: argparse.Namespace, src: str | None, tmp: Path, latency_too: bool) -> tuple[Measured, Latency | None]:
    """One fresh server (its code from `src`, else this interpreter's), its pool, and one run of the mode."""
    env = {"PYTHONPATH": src} if src else {}
    server = EmbeddedServer(tmp / unique("data"), env=env)
    client: BatchClient | None = None
    try:
        t = time.perf_counter()
        server.start()
        client = make_client(server)
        pool_id = create_pool_and_wait(client, nodes=NODES, slots=SLOTS)
        print(
            f"{src or 'this code'}: server pid {server.process.pid}; pool of {NODES} nodes x {SLOTS} slots idle "
            f"{time.perf_counter() - t:.1f} s after start"
        )
        warm_up(client, pool_id)
        if args.idle_job:  # active, never given a task: it wants no slot
            client.create_job(
                models.BatchJobCreateOptions(id=unique("idle"), pool_info=models.BatchPoolInfo(pool_id=pool_id))
            )
        meter = CpuMeter(server.process.pid)
        command = f"/bin/sleep {args.sleep}" if args.sleep else "/bin/true"

        def throughput(jobs: int) -> Throughput:
            return run_throughput(
                client,
                pool_id,
                args.tasks,
                args.per_call,
                args.add_threads,
                args.poll,
                args.timeout,
                meter,
                command,
                jobs,
                args.queued,
            )

        before = bare(args.tasks, args.bare_threads)
        one_job = throughput(1) if args.jobs > 1 else None
        run = throughput(args.jobs)
        after = bare(args.tasks, args.bare_threads)
        latency = None
        if latency_too and args.latency_tasks:
            latency = run_latency(client, pool_id, args.latency_tasks, args.latency_command, poll=0.01)
        return Measured((before + after) / 2, run, one_job), latency
    finally:
        if client is not None:
            client.close()
        code = server.stop()
        if code:
            print(f"server stopped with exit code {code}")


def describe(label: str, m: Measured, args: argparse.Namespace) -> str:
    run = m.run
    added = "nodes enabled" if args.queued else "all added"  # --queued: the adds were before the clock
    line = (
        f"{label}: bare {m.base:.0f} commands/s; kiln {run.rate:.1f} tasks/s ({run.tasks} tasks in "
        f"{run.seconds:.2f} s), ratio {run.rate / m.base:.3f}; succeeded {run.succeeded}, failed {run.failed}; "
        f"{added} after {run.add_seconds:.2f} s; CPU per task: server {run.cpu_server / run.tasks * 1e6:.0f} us, "
        f"nodes {run.cpu_nodes / run.tasks * 1e6:.0f} us, client {run.cpu_client / run.tasks * 1e6:.0f} us"
    )
    if args.sleep:
        line += f"; slot efficiency {run.slot_efficiency(args.sleep, NODES * SLOTS):.3f}"
    if m.one_job is not None:
        one = m.one_job
        line += (
            f"; one job of {one.tasks}: {one.rate:.1f} tasks/s, ratio {run.rate / one.rate:.3f}, CPU per task: "
            f"server {one.cpu_server / one.tasks * 1e6:.0f} us, nodes {one.cpu_nodes / one.tasks * 1e6:.0f} us, "
            f"client {one.cpu_client / one.tasks * 1e6:.0f} us"
        )
    return line


def summary(label: str, measured: list[Measured], args: argparse.Namespace) -> list[tuple[str, str, str, str]]:
    """Rows of the figures of one code version: medians over its runs."""
    n = f"median of {len(measured)}" if len(measured) > 1 else "1 run"
    tasks = measured[0].run.tasks
    what = f"/bin/sleep {args.sleep}" if args.sleep else "/bin/true"
    shape = f"{args.jobs:,} jobs x {tasks // args.jobs:,}" if args.jobs > 1 else f"{tasks:,}"
    shape += " (+ an idle job)" if args.idle_job else ""
    shape += ", added before the clock" if args.queued else ""
    rate = statistics.median(m.run.rate for m in measured)
    rows = [
        (
            f"[{label}] bare subprocess.run, {args.bare_threads} threads",
            f"{statistics.median(m.base for m in measured):,.0f} commands/s",
            n,
            "",
        ),
        (
            f"[{label}] kiln, {shape} x {what}",
            f"{rate:,.1f} tasks/s",
            n,
            f"{sum(m.run.failed for m in measured)} failed",
        ),
        (
            f"[{label}]   CPU per task, server / nodes / client",
            f"{statistics.median(m.run.cpu_server for m in measured) / tasks * 1e3:.2f} / "
            f"{statistics.median(m.run.cpu_nodes for m in measured) / tasks * 1e3:.2f} / "
            f"{statistics.median(m.run.cpu_client for m in measured) / tasks * 1e3:.2f} ms",
            n,
            "",
        ),
    ]
    if args.sleep:
        efficiency = statistics.median(m.run.slot_efficiency(args.sleep, NODES * SLOTS) for m in measured)
        rows.append(
            (
                f"[{label}] slot efficiency",
                f"{efficiency:.3f}",
                f"target >= {TARGET_EFFICIENCY}",
                verdict(efficiency >= TARGET_EFFICIENCY),
            )
        )
    elif args.jobs > 1:
        ratio = statistics.median(m.run.rate / m.one_job.rate for m in measured if m.one_job is not None)
        rows.append(
            (
                f"[{label}] ratio many jobs / one job",
                f"{ratio:.3f}",
                f"target >= {TARGET_MANY_JOBS}",
                verdict(ratio >= TARGET_MANY_JOBS),
            )
        )
    else:
        ratio = statistics.median(m.run.rate / m.base for m in measured)
        rows.append(
            (
                f"[{label}] ratio kiln / bare",
                f"{ratio:.3f}",
                f"target >= {TARGET_RATIO}",
                verdict(ratio >= TARGET_RATIO),
            )
        )
    return rows


def verdict(met: bool) -> str:
    return "PASS" if met else "MISS"


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks per throughput run (and bare commands)")
    parser.add_argument("--per-call", type=int, default=100, help="tasks per create_task_collection call")
    parser.add_argument("--add-threads", type=int, default=1, help="threads adding collections (1 = sequential)")
    parser.add_argument("--repeat", type=int, default=1, help="throughput repeats; medians are reported")
    parser.add_argument("--idle-job", action="store_true", help="a second active job in the pool, with no tasks")
    parser.add_argument("--sleep", type=float, default=0.0, help="tasks run /bin/sleep SECONDS: slot efficiency")
    parser.add_argument("--jobs", type=int, default=1, help="spread the tasks over this many jobs (vs one job)")
    parser.add_argument(
        "--queued", action="store_true", help="add every task before the clock starts (the nodes take none meanwhile)"
    )
    parser.add_argument(
        "--src",
        action="append",
        default=[],
        help="the server's code from this src dir (PYTHONPATH); given twice, the two alternate run by run (A/B)",
    )
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
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (server logs, databases)")
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
    sources: list[str | None] = list(args.src) or [None]
    measured: dict[str | None, list[Measured]] = {src: [] for src in sources}
    latency: Latency | None = None
    try:
        for i in range(args.repeat):
            for src in sources:  # alternating: a drift in the machine's speed falls on both
                m, lat = measure(args, src, tmp, latency_too=i == 0 and src == sources[-1])
                latency = lat or latency
                measured[src].append(m)
                print(f"run {i + 1}/{args.repeat} " + describe(src or "this code", m, args))
    finally:
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
    for src, runs in measured.items():
        if runs:
            rows += summary(src or "this code", runs, args)
    if latency:
        d = latency.dispatch_ms
        p50, p95 = percentile(d, 50), percentile(d, 95)
        rows += [
            (
                f"dispatch latency p50 ({len(d)} tasks, idle nodes)",
                f"{p50:.1f} ms",
                f"target <= {TARGET_P50_MS:.0f} ms",
                verdict(p50 <= TARGET_P50_MS),
            ),
            ("dispatch latency p95", f"{p95:.1f} ms", "", ""),
            ("dispatch latency max", f"{max(d):.1f} ms", "", ""),
            ("create_task round trip p50 (client)", f"{percentile(latency.add_ms, 50):.1f} ms", "", ""),
        ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)] if rows else [0] * 4
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    if any(m.run.failed for runs in measured.values() for m in runs):
        print("WARNING: some tasks did not succeed")


if __name__ == "__main__":
    main()
