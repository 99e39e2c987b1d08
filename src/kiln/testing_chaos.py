"""Chaos on a real `kiln serve` (issue 20): tasks run while the server is SIGKILLed and restarted and node
workers are SIGKILLed, at moments chosen by the tasks' progress; then what a user must never see is counted.

- lost: a task that was added but never completed with exit code 0;
- run twice at once: a run that found another run of the same task still holding its lock (flock);
- runs not counted: a task that ran more often than requeueCount + retryCount + 1;
- store integrity: SQLite's integrity and foreign key checks after a clean stop.

Each run of a task leaves a file of its own in a marks directory (`<task>.run.<pid>`) and holds a lock file
the harness made beforehand (`<task>.lock`, writable by every account). bench/chaos.py runs the full size;
tests/e2e/test_chaos.py a small one.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from azure.batch import BatchClient, models

from kiln.cli.embedded import EmbeddedServer
from kiln.testing import create_pool_and_wait, make_client, shell, wait_for

JOB = "chaos"


@dataclass
class Plan:
    tasks: int = 1000
    nodes: int = 2
    slots: int = 4
    server_kills: int = 10
    worker_kills: int = 3
    #: seconds each task sleeps
    task_seconds: float = 0.2
    seed: int = 20
    #: the job's maxParallelTasks (None: unlimited, so its tasks may be sent ahead to full nodes)
    max_parallel_tasks: int | None = None


@dataclass
class Outcome:
    lost: list[str] = field(default_factory=list)
    run_twice_at_once: list[str] = field(default_factory=list)
    runs_not_counted: list[str] = field(default_factory=list)
    integrity: str = ""
    runs: int = 0
    kills: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.lost or self.run_twice_at_once or self.runs_not_counted) and self.integrity == "ok"


def run(plan: Plan, data_dir: Path, marks: Path, log: Callable[[str], None] = lambda _: None) -> Outcome:
    """data_dir and marks must be reachable by task accounts (marks writable by all, like /tmp)."""
    rng = random.Random(plan.seed)
    ids = [f"t{n}" for n in range(plan.tasks)]
    for task_id in ids:
        lock = marks / f"{task_id}.lock"
        lock.touch()
        os.chmod(lock, 0o666)
    server = EmbeddedServer(data_dir).start()
    outcome = Outcome()
    try:
        client = make_client(server)
        pool_id = create_pool_and_wait(client, nodes=plan.nodes, slots=plan.slots, pool_id="chaos")
        client.create_job(
            models.BatchJobCreateOptions(
                id=JOB,
                pool_info=models.BatchPoolInfo(pool_id=pool_id),
                max_parallel_tasks=plan.max_parallel_tasks,
            )
        )
        command = shell(
            f"touch {marks}/$AZ_BATCH_TASK_ID.run.$AZ_BATCH_NODE_ID.$$; exec 9<{marks}/$AZ_BATCH_TASK_ID.lock; "
            f"flock -n 9 || touch {marks}/$AZ_BATCH_TASK_ID.overlap.$$; sleep {plan.task_seconds}"
        )
        for start in range(0, len(ids), 100):
            chunk = [models.BatchTaskCreateOptions(id=i, command_line=command) for i in ids[start : start + 100]]
            client.create_task_collection(JOB, models.BatchTaskGroup(task_values=chunk))
        kills = ["server"] * plan.server_kills + ["worker"] * plan.worker_kills
        rng.shuffle(kills)
        for n, kind in enumerate(kills):
            # the next kill once the runs have gone on: spread over the first 90% of the work
            due = (n + 1) * plan.tasks * 9 // (10 * (len(kills) + 1))
            wait_for(_runs_reach(marks, due), 600, f"{due} runs before kill {n + 1}")
            if kind == "server":
                server = _kill_and_restart(server, data_dir)
            else:
                _kill_a_worker(server, rng)
            outcome.kills.append(kind)
            log(f"kill {n + 1}/{len(kills)}: {kind} after {_runs(marks)} runs")
        client = make_client(server)
        wait_for(lambda: _all_completed(client, len(ids)), 900, "every task to complete")
        tasks = {t.id: t for t in client.list_tasks(JOB)}
    finally:
        server.stop()
    outcome.runs = _runs(marks)
    for task_id in ids:
        task = tasks.get(task_id)
        info = task.execution_info if task is not None else None
        if task is None or task.state != "completed" or info is None or info.exit_code != 0:
            outcome.lost.append(task_id)
        if any(marks.glob(f"{task_id}.overlap.*")):
            outcome.run_twice_at_once.append(task_id)
        runs = len(list(marks.glob(f"{task_id}.run.*")))
        if info is not None and runs > info.requeue_count + info.retry_count + 1:
            outcome.runs_not_counted.append(task_id)
    outcome.integrity = _integrity(data_dir / "kiln.db")
    return outcome


def _runs_reach(marks: Path, due: int) -> Callable[[], bool]:
    return lambda: _runs(marks) >= due


def _runs(marks: Path) -> int:
    return sum(1 for name in os.listdir(marks) if ".run." in name)


def _all_completed(client: BatchClient, total: int) -> bool:
    try:
        counts = client.get_job_task_counts(JOB).task_counts
    except Exception:  # the server is starting
        return False
    return counts.completed >= total


def _kill_and_restart(server: EmbeddedServer, data_dir: Path) -> EmbeddedServer:
    """SIGKILL the server alone (its workers follow it), then a new one on the same data dir and port."""
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait()
    return EmbeddedServer(data_dir, port=server.port).start()


def _kill_a_worker(server: EmbeddedServer, rng: random.Random) -> None:
    """SIGKILL one node's Dask worker process (a child of the server that multiprocessing spawned)."""
    assert server.process is not None
    workers = [pid for pid in _children(server.process.pid) if b"spawn_main" in _cmdline(pid)]
    if workers:
        os.kill(rng.choice(workers), signal.SIGKILL)


def _children(parent: int) -> list[int]:
    pids = []
    for name in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{name}/stat").read_text() if name.isdigit() else ""
        except OSError:
            continue
        if stat and int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            pids.append(int(name))
    return pids


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _integrity(database: Path) -> str:
    with sqlite3.connect(database) as connection:
        integrity = connection.execute("PRAGMA integrity_check").fetchone()[0]
        foreign = connection.execute("PRAGMA foreign_key_check").fetchall()
    return integrity if not foreign else f"{integrity}; foreign key problems: {foreign[:5]}"
