"""A restart of a server whose store holds one job of N active tasks: how long until the port answers, how
long until the scheduler has rebuilt its control state, and the server's memory.

With --completed the job's N tasks (`/bin/true`) ran to completion on a pool of 2 nodes x 4 slots instead: the
history a long-lived server holds, whose kept directories (retentionTime, default 7 days) must cost no memory.
With --dependencies the job uses task dependencies and its task ids are numeric (each integer's bit is kept for
taskIdRanges); an add to it answers once its dependency graph is rebuilt, so "add answers s" is that rebuild
(with --completed: from a job's history, which must cost no memory either).

The store is built once through the azure-batch SDK (one job of N tasks on a pool without nodes, so every
task stays active and queued: the most the control state can hold) and kept in --store (reused when it holds
N tasks). Each run copies it and starts `kiln serve` on the copy from each --src tree in turn (PYTHONPATH),
--rounds times, alternating, so before and after are measured side by side on this machine's drifting speed:

    python bench/restart.py --tasks 1000000 --store /tmp/kiln-1m --src /work/main/src --src src --rounds 2

Each source first opens its own copy once (its migrations run there, untimed). Figures per run: seconds from
starting the process to the port answering a list of pools, to a task add answering, to a terminate of that
task answering (it takes the scheduler's lock: the control state is rebuilt), the server's RSS then (MB); the
CPU seconds the server process had used when its port answered (a figure the machine's load leaves alone);
and the load average.
Prints one line per (source, round, figure); asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from azure.batch import models

from kiln.cli.embedded import EmbeddedServer, free_port
from kiln.testing import create_pool_and_wait, make_client, wait_for
from scale import JOB, add_tasks, rss_mb  # bench/ is on sys.path: run as a script


def build(store: Path, tasks: int, src: str, completed: bool, dependencies: bool) -> None:
    """A data dir with one job of `tasks` active (or completed) tasks, unless `store` already holds that; built
    by `src` (the first --src: the oldest schema, which the later trees migrate from)."""
    marker = store / "tasks"
    if marker.exists() and marker.read_text() == f"{JOB} {tasks} {completed} {dependencies}":
        return
    shutil.rmtree(store, ignore_errors=True)
    store.mkdir(parents=True)
    os.chmod(store, 0o755)
    os.environ["PYTHONPATH"] = os.path.abspath(src)
    server = EmbeddedServer(store / "data", port=free_port()).start()
    try:
        client = make_client(server)
        pool_id = create_pool_and_wait(client, nodes=2 if completed else 0, slots=4)
        pool_info = models.BatchPoolInfo(pool_id=pool_id)
        client.create_job(
            models.BatchJobCreateOptions(id=JOB, pool_info=pool_info, uses_task_dependencies=dependencies)
        )
        rate = add_tasks(client, 0, tasks, numeric=dependencies)  # numeric ids: their integers are kept
        print(f"built {tasks} tasks at {rate:.0f} tasks/s", flush=True)
        if completed:
            wait_for(lambda: client.get_job_task_counts(JOB).task_counts.completed == tasks, 3600, "tasks run")
    finally:
        server.stop(timeout=120)
    (store / "server.log").unlink(missing_ok=True)
    marker.write_text(f"{JOB} {tasks} {completed} {dependencies}")


def migrated(store: Path, src: str, index: int) -> Path:
    """A copy of the built data dir that `src` has opened once (its migrations run), for its timed starts."""
    copy = store / f"src{index}"
    if not (copy / "opened").exists():
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(store / "data", copy / "data")
        os.environ["PYTHONPATH"] = os.path.abspath(src)
        EmbeddedServer(copy / "data", port=free_port()).start(timeout=900).stop(timeout=120)
        (copy / "opened").write_text(src)
    return copy / "data"


def run(src: str, data: Path, tasks: int, scratch: str | None, completed: bool, settle: float) -> dict[str, float]:
    """Start on a copy of `data`: the port; a task added and terminated (terminating takes the scheduler's
    lock, so it waits for the control state); the RSS then, and its peak over the next `settle` seconds (work
    a restart does behind the open port)."""
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        os.chmod(tmp, 0o755)
        shutil.copytree(data, Path(tmp) / "data")
        os.environ["PYTHONPATH"] = os.path.abspath(src)
        server = EmbeddedServer(Path(tmp) / "data", port=free_port())
        began = time.perf_counter()
        server.start(timeout=900)
        figures = {"port answers s": time.perf_counter() - began, "CPU to port s": cpu_seconds(server)}
        try:
            client = make_client(server)
            client.create_task(JOB, models.BatchTaskCreateOptions(id="probe", command_line="/bin/true"))
            figures["add answers s"] = time.perf_counter() - began
            client.terminate_task(JOB, "probe")
            figures["control state s"] = time.perf_counter() - began
            counts = client.get_job_task_counts(JOB).task_counts
            expected = (0, tasks + 1) if completed else (tasks, 1)
            assert (counts.active, counts.completed) == expected, counts
            figures["RSS MB"] = rss_mb(server)
            until = time.perf_counter() + settle
            while time.perf_counter() < until:
                figures["RSS settled MB"] = max(figures.get("RSS settled MB", 0.0), rss_mb(server))
                time.sleep(0.25)
            figures["load average"] = os.getloadavg()[0]
        finally:
            server.stop(timeout=120)
        return figures


def cpu_seconds(server: EmbeddedServer) -> float:
    """The CPU time the server process has used (user and system, all its threads): what a start costs,
    which the machine's other load does not inflate as it does the wall time."""
    assert server.process is not None
    fields = Path(f"/proc/{server.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--store", required=True, help="where the built data dir is kept between runs")
    parser.add_argument("--src", action="append", help="source tree(s) to run the server from, alternating")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--dir", help="where the copies go")
    parser.add_argument("--completed", action="store_true", help="the tasks ran to completion (history)")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds to watch the RSS after the restart")
    parser.add_argument("--dependencies", action="store_true", help="the job uses task dependencies")
    args = parser.parse_args()
    store = Path(args.store)
    sources = args.src or [str(Path(__file__).resolve().parents[1] / "src")]
    build(store, args.tasks, sources[0], args.completed, args.dependencies)
    opened = [migrated(store, src, index) for index, src in enumerate(sources)]
    for round_ in range(args.rounds):
        for src, data in zip(sources, opened, strict=True):
            for name, value in run(src, data, args.tasks, args.dir, args.completed, args.settle).items():
                print(f"{src:24} {round_:2} {name:16} {value:9.2f}", flush=True)


if __name__ == "__main__":
    main()
