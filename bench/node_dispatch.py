"""How fast commands go through DaskBackend, against bare subprocess.run in threads.

Runs N `/bin/true` steps on 2 nodes. Each node keeps at most `window` steps in flight (its slots);
whenever a batch of results comes back, the freed slots are refilled with one run() message,
as the scheduler does. Prints figures only.

    python bench/node_dispatch.py [--steps 2000] [--windows 4,50] [--no-bare]

CPU per command is split into the control plane (this process), the workers (the agents), the
launchers, and the commands themselves (as reaped by the launchers).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

from kiln.compute.dask_backend import DaskBackend
from kiln.compute.protocol import Step, StepResult

NODES = ("n1", "n2")


def bare(steps: int, threads: int = 4) -> float:
    """Commands per second of subprocess.run in a thread pool, no Dask."""
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda _: subprocess.run(["/bin/true"], check=True), range(steps)))
    return steps / (time.perf_counter() - start)


def bare_with_layout(steps: int, threads: int = 4) -> float:
    """The same, plus what a node does for every command: task dir and wd, stdout.txt and stderr.txt."""

    def one(i: int, root: Path) -> None:
        wd = root / f"t{i}" / "wd"
        wd.mkdir(parents=True)
        with open(wd.parent / "stdout.txt", "wb") as out, open(wd.parent / "stderr.txt", "wb") as err:
            subprocess.run(["/bin/true"], check=True, cwd=wd, stdout=out, stderr=err, start_new_session=True)

    with tempfile.TemporaryDirectory(prefix="kiln-bench-bare-") as tmp:
        start = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda i: one(i, Path(tmp)), range(steps)))
        return steps / (time.perf_counter() - start)


class Feeder:
    """Keeps `window` steps in flight per node and refills from each result batch."""

    def __init__(self, backend: DaskBackend, data_dir: Path, steps: int, window: int, tag: str) -> None:
        self.backend, self.data_dir, self.window, self.tag = backend, data_dir, window, tag
        self.todo = list(range(steps))
        self.in_flight = {n: 0 for n in NODES}
        self.done = 0
        self.failed = 0
        self.batches: list[int] = []
        self.finished = asyncio.Event()
        self.total = steps

    def step(self, node_id: str, i: int) -> Step:
        return Step(
            step_id=f"{self.tag}-{i}",
            kind="task",
            node_root=str(self.data_dir / node_id),
            task_dir=f"workitems/{self.tag}/job-1/t{i}",
            command_line="/bin/true",
        )

    async def refill(self, node_id: str) -> None:
        free = self.window - self.in_flight[node_id]
        batch, self.todo = self.todo[:free], self.todo[free:]
        if batch:
            self.in_flight[node_id] += len(batch)
            await self.backend.run(node_id, [self.step(node_id, i) for i in batch])

    async def on_results(self, node_id: str, results: list[StepResult]) -> None:
        self.batches.append(len(results))
        self.in_flight[node_id] -= len(results)
        self.done += len(results)
        failures = [r for r in results if r.exit_code != 0]
        if failures and not self.failed:
            print(f"first failure: {failures[0]}")
        self.failed += len(failures)
        if self.done >= self.total:
            self.finished.set()
        await self.refill(node_id)

    async def run(self) -> float:
        start = time.perf_counter()
        await asyncio.gather(*(self.refill(n) for n in NODES))
        await asyncio.wait_for(self.finished.wait(), 600)
        return self.total / (time.perf_counter() - start)


def launchers(worker_pids: list[int]) -> list[psutil.Process]:
    """The launcher processes: children of the workers running kiln.compute.node.launcher."""
    found = []
    for pid in worker_pids:
        for child in psutil.Process(pid).children():
            with contextlib.suppress(psutil.Error):
                if "kiln.compute.node.launcher" in child.cmdline():
                    found.append(child)
    return found


def cpu_seconds(worker_pids: list[int]) -> dict[str, float]:
    """CPU time so far of this process (the control plane), the workers, the launchers themselves, and
    the commands (reaped by the launchers, so counted in their children's times). A launcher that
    ended during the run is missed: none should."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    figures = {
        "control plane": own.ru_utime + own.ru_stime,
        "workers": 0.0,
        "of which user": 0.0,
        "launchers": 0.0,
        "commands": 0.0,
    }
    for pid in worker_pids:
        times = psutil.Process(pid).cpu_times()
        figures["workers"] += times.user + times.system
        figures["of which user"] += times.user  # Python's own work; system time is mostly the file system's
    for launcher in launchers(worker_pids):
        with contextlib.suppress(psutil.Error):
            times = launcher.cpu_times()
            figures["launchers"] += times.user + times.system
            figures["commands"] += times.children_user + times.children_system
    return figures


async def through_dask(steps: int, windows: list[int]) -> dict[int, tuple[float, float, int, dict[str, float]]]:
    figures = {}
    with tempfile.TemporaryDirectory(prefix="kiln-bench-") as tmp:
        data_dir = Path(tmp)
        data_dir.chmod(0o755)  # as root, steps run as task accounts, which must pass through it
        backend = DaskBackend(data_dir)
        up: set[str] = set()
        all_up = asyncio.Event()

        async def on_up(node_id: str) -> None:
            up.add(node_id)
            if up == set(NODES):
                all_up.set()

        backend.on_node_up = on_up
        await backend.start()
        try:
            start = time.perf_counter()
            for node_id in NODES:
                await backend.add_node(node_id, str(data_dir / node_id))
            await asyncio.wait_for(all_up.wait(), 60)
            print(f"2 nodes up in {time.perf_counter() - start:.2f} s")
            # nodes share their host's worker: each process counted once
            workers = list(dict.fromkeys(pid for n in NODES if (pid := backend.worker_pid(n))))
            for window in windows:
                feeder = Feeder(backend, data_dir, steps, window, tag=f"w{window}")
                backend.on_results = feeder.on_results
                before = cpu_seconds(workers)
                rate = await feeder.run()
                after = cpu_seconds(workers)
                mean_batch = sum(feeder.batches) / len(feeder.batches)
                per_step = {name: (after[name] - before.get(name, 0.0)) / steps * 1e6 for name in after}
                figures[window] = (rate, mean_batch, feeder.failed, per_step)
        finally:
            await backend.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--windows", default="4,50", help="steps in flight per node, comma-separated")
    parser.add_argument(
        "--no-bare", dest="bare", action="store_false", help="skip the bare subprocess.run figures (shorter runs)"
    )
    args = parser.parse_args()
    windows = [int(w) for w in args.windows.split(",")]

    if args.bare:
        base = bare(args.steps)
        print(f"bare subprocess.run, 4 threads: {base:8.0f} commands/s")
        with_layout = bare_with_layout(args.steps)
        print(f"bare subprocess.run + task dir and output files, 4 threads: {with_layout:8.0f} commands/s")
    for window, (rate, mean_batch, failed, cpu) in asyncio.run(through_dask(args.steps, windows)).items():
        relative = f"{rate / base:5.1%} of bare, {rate / with_layout:5.1%} of bare + layout; " if args.bare else ""
        print(
            f"DaskBackend, 2 nodes x {window:>3} in flight: {rate:8.0f} commands/s "
            f"({relative}mean result batch {mean_batch:.1f}; failed {failed}; CPU per command: "
            + ", ".join(f"{name} {us:.0f} us" for name, us in cpu.items())
            + ")"
        )
    print(f"load average after the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":  # the nanny spawns workers, which re-import this module
    main()
