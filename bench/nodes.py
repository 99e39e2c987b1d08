"""A pool of N nodes on a real `kiln serve`, driven by the azure-batch SDK: time to idle, memory, dispatch.

For each N (--nodes, repeatable) and each source tree (--src, repeatable, alternating --rounds times, so before
and after are measured side by side on this machine's drifting speed):

* idle s: from create_pool until the pool is steady and every node idle (or --timeout: then the node states
  are printed instead, e.g. a pool that never comes up);
* RSS MB: of the server's whole process tree (psutil: the server, the Dask workers, launchers and commands),
  sampled every 0.2 s: the peak until idle and the value at idle;
* dispatch p50/p95 ms: --tasks-per-node × N `/bin/true` tasks (1 slot each) added in collections of 100 once
  the pool is idle; a task's dispatch is its start time minus its creation time (both the server's clocks);
  run s: from the first add until every task completed; RSS peak MB while they ran.

    python bench/nodes.py --nodes 20 --nodes 100 --src /work/main/src --src src

main against a branch for 100 and 1,000 idle nodes, alternating, twice (the figures in docs/performance.md):

    python bench/nodes.py --nodes 100 --nodes 1000 --src /work/main/src --src src --rounds 2 --tasks-per-node 0

Prints one row per (source, N, round); asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import psutil
from azure.batch import BatchClient, models

from kiln.cli.embedded import EmbeddedServer
from kiln.testing import make_client, pool_options

COLLECTION = 100
MB = 1024 * 1024


def tree_rss(pid: int) -> int:
    """Bytes resident in the process and all its descendants."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


class Sampler:
    """The peak of tree_rss(pid), sampled on a thread."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            self._stop.wait(0.2)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def wait_idle(client: BatchClient, pool_id: str, nodes: int, timeout: float) -> tuple[float | None, str]:
    """(seconds until steady with every node idle, or None at timeout; the node states seen last). Polls the
    pool's node counts, not its node list: a list of 1,000 nodes costs the SDK ~0.3 s of this box's CPU to
    read, which the server under test would lose."""
    began = time.perf_counter()
    states: dict[str, int] = {}
    while time.perf_counter() - began < timeout:
        counts = next((c for c in client.list_pool_node_counts() if c.pool_id == pool_id), None)
        dedicated = counts.dedicated if counts is not None else None
        states = {k: v for k, v in (dedicated.as_dict() if dedicated else {}).items() if v and k != "total"}
        if states.get("idle") == nodes and client.get_pool(pool_id).allocation_state == "steady":
            return time.perf_counter() - began, "all idle"
        time.sleep(0.1)
    return None, " ".join(f"{state}:{count}" for state, count in sorted(states.items()))


def dispatch(client: BatchClient, pool_id: str, tasks: int) -> tuple[float, float, float]:
    """(p50 ms, p95 ms of creation → start, seconds to run them all)."""
    job_id = "bench-nodes"
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id)))
    began = time.perf_counter()
    for first in range(0, tasks, COLLECTION):
        specs = [
            models.BatchTaskCreateOptions(id=f"t{i:06d}", command_line="/bin/true")
            for i in range(first, min(first + COLLECTION, tasks))
        ]
        client.create_task_collection(job_id, models.BatchTaskGroup(task_values=specs))
    while True:
        done = [t for t in client.list_tasks(job_id) if t.state == "completed"]
        if len(done) == tasks:
            break
        time.sleep(0.1)
    ran = time.perf_counter() - began
    waits = sorted((t.execution_info.start_time - t.creation_time).total_seconds() * 1000 for t in done)
    return statistics.median(waits), waits[min(len(waits) - 1, round(0.95 * (len(waits) - 1)))], ran


def run(src: str, nodes: int, per_node: int, timeout: float, directory: str | None) -> str:
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        os.chmod(tmp, 0o755)  # task accounts pass through it
        os.environ["PYTHONPATH"] = os.path.abspath(src)  # the server subprocess runs this tree
        server = EmbeddedServer(Path(tmp) / "data").start()
        assert server.process is not None
        try:
            client = make_client(server)
            pool_id = f"bench-{nodes}"
            with Sampler(server.process.pid) as starting:
                client.create_pool(pool_options(pool_id, target_dedicated_nodes=nodes, task_slots_per_node=1))
                idle, states = wait_idle(client, pool_id, nodes, timeout)
            at_idle = tree_rss(server.process.pid)
            row = f"{src:24} {nodes:6} "
            if idle is None:
                return (
                    row
                    + f"{'never':>8} {starting.peak / MB:9.0f} {at_idle / MB:9.0f}  ({states} after {timeout:.0f} s)"
                )
            row += f"{idle:8.1f} {starting.peak / MB:9.0f} {at_idle / MB:9.0f}"
            if per_node:
                with Sampler(server.process.pid) as running:
                    p50, p95, ran = dispatch(client, pool_id, per_node * nodes)
                row += f" {p50:8.0f} {p95:8.0f} {ran:7.1f} {running.peak / MB:9.0f}"
            return row
        finally:
            server.stop(timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, action="append", help="pool sizes (default 20 and 100)")
    parser.add_argument("--tasks-per-node", type=int, default=2, help="tasks for the dispatch figures (0: none)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds a pool may take to become idle")
    parser.add_argument("--src", action="append", help="source tree(s) to run the server from, alternating")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--dir", help="where the temporary data dirs go")
    args = parser.parse_args()
    sources = args.src or [str(Path(__file__).resolve().parents[1] / "src")]
    header = "idle s  RSS peak  RSS idle  disp p50  disp p95   run s  RSS run (MB, ms)"
    print(f"{'source':24} {'nodes':>6} {header}", flush=True)
    for nodes in args.nodes or [20, 100]:
        for _ in range(args.rounds):
            for src in sources:
                print(run(src, nodes, args.tasks_per_node, args.timeout, args.dir), flush=True)


if __name__ == "__main__":
    main()
