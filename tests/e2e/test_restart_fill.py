"""After a restart the port opens before the job queues are full: what may be served meanwhile is, and what
needs the control state waits for it (scheduler/engine.py `_fill_queues`).

The store is made by a real server through the SDK; then a Scheduler opens it in this process, where the
queue fill's reads (store.live.queued) are held until the test lets them go, so "during the fill" is a fact
the test controls, not a matter of timing. The backend is a bare stand-in: the pool has no nodes, so the
scheduler never calls it."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from azure.batch import models
from azure.core.exceptions import ResourceNotFoundError

from kiln.cli.embedded import EmbeddedServer
from kiln.commands import tasks
from kiln.commands.control import Control
from kiln.scheduler import engine
from kiln.store import live
from kiln.store import rows as db
from kiln.store.database import Database, sqlite_url
from kiln.testing import create_pool_and_wait, make_client, read_node_file, wait_for, wait_tasks_completed
from kiln.wire import ids
from kiln.wire.models import TaskAdd

JOB = "refill"
TASKS = 50
BRIEF = 5  #: seconds the brief task's directory is kept


def _store_with_active_tasks(data: Path) -> None:
    """A job of TASKS active tasks on a pool without nodes, left by a server that stopped."""
    with EmbeddedServer(data) as server:
        client = make_client(server)
        pool_id = create_pool_and_wait(client, nodes=0)
        client.create_job(models.BatchJobCreateOptions(id=JOB, pool_info=models.BatchPoolInfo(pool_id=pool_id)))
        client.create_tasks(
            JOB, [models.BatchTaskCreateOptions(id=f"t{i}", command_line="/bin/true") for i in range(TASKS)]
        )


def _held(monkeypatch: pytest.MonkeyPatch, read: str) -> threading.Event:
    """store.live's `read` waits, on its reader thread, until the test sets the event it returns."""
    gate = threading.Event()
    unheld = getattr(live, read)

    def held(*args: Any, **kwargs: Any) -> Any:
        gate.wait()
        return unheld(*args, **kwargs)

    monkeypatch.setattr(live, read, held)
    return gate


def _opened(data: Path) -> tuple[Database, engine.Scheduler, Control]:
    """The store a server left, opened by a scheduler in this process with a bare backend (no nodes)."""
    database = Database(sqlite_url(data))
    database.migrate()
    backend: Any = SimpleNamespace()
    scheduler = engine.Scheduler(database, backend, data_dir=data, account_name="a", account_url="http://a")
    return database, scheduler, Control(database, scheduler, backend)


async def test_adds_and_reads_answer_while_the_queues_fill_and_control_waits_for_them(
    open_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = open_tmp / "data"
    _store_with_active_tasks(data)
    gate = _held(monkeypatch, "queued")
    monkeypatch.setattr(engine, "FILL_PART", 20)  # the fill reads in three parts
    database, scheduler, control = _opened(data)
    try:
        await scheduler.start()  # returns with the fill under way: the port would open now
        assert scheduler.lock.locked()
        job, outcomes = await tasks.add(control, JOB, [TaskAdd.model_validate({"id": "late", "commandLine": "x"})])
        late = outcomes[0]
        assert isinstance(late, dict)
        assert (await tasks.get(control, JOB, "t0"))[1]["state"] == "active"
        ending = asyncio.create_task(scheduler.end_task(job["key"], ids.key("t1"), delete=False))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not ending.done(), "terminating a task changes the control state: it waits for the fill"
        queue = scheduler.jobs[job["key"]].queue
        assert sorted(queue.queued) == [late["seq"]], "the add queued its own task meanwhile"

        gate.set()
        await ending
        seqs = {
            row["id"]: row["seq"]
            for row in await database.read(lambda conn: db.find(conn, db.tasks, job_key=job["key"]))
        }
        expected = sorted(seq for task_id, seq in seqs.items() if task_id != "t1")
        assert sorted(queue.queued) == expected and sorted(s for s, _ in queue.heap) == expected
        scheduler.state.check()  # each task queued once, the heap whole
    finally:
        gate.set()
        await scheduler.close()
        database.close()


async def test_a_dependency_graph_is_rebuilt_behind_the_port_and_only_its_jobs_adds_wait_for_it(
    open_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The graphs of jobs with dependencies are rebuilt behind the open port (their reads held by the test):
    reads and adds to other jobs answer meanwhile, an add to such a job waits for its graph, and then only
    the tasks free to run are queued."""
    data = open_tmp / "data"
    with EmbeddedServer(data) as server:
        client = make_client(server)
        pool_info = models.BatchPoolInfo(pool_id=create_pool_and_wait(client, nodes=0))
        client.create_job(models.BatchJobCreateOptions(id="plain", pool_info=pool_info))
        client.create_job(models.BatchJobCreateOptions(id="deps", pool_info=pool_info, uses_task_dependencies=True))
        after_a = models.BatchTaskDependencies(task_ids=["a"])
        client.create_tasks(
            "deps",
            [
                models.BatchTaskCreateOptions(id="a", command_line="/bin/true"),
                models.BatchTaskCreateOptions(id="b", command_line="/bin/true", depends_on=after_a),
            ],
        )
    gate = _held(monkeypatch, "dependency_rows")
    database, scheduler, control = _opened(data)
    try:
        await scheduler.start()  # returns with the rebuild under way: the port would open now
        c = TaskAdd.model_validate({"id": "c", "commandLine": "x", "dependsOn": {"taskIds": ["b"]}})
        adding = asyncio.create_task(tasks.add(control, "deps", [c]))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not adding.done(), "an add to a job with dependencies waits for its graph"
        assert (await tasks.get(control, "deps", "a"))[1]["state"] == "active"  # reads answer
        await tasks.add(control, "plain", [TaskAdd.model_validate({"id": "p", "commandLine": "x"})])
        assert not adding.done()
        gate.set()
        job, _ = await adding
        seqs = {
            row["id"]: row["seq"]
            for row in await database.read(lambda conn: db.find(conn, db.tasks, job_key=job["key"]))
        }
        await scheduler.lock.acquire()  # the fill is over
        scheduler.lock.release()
        assert sorted(scheduler.jobs[job["key"]].queue.queued) == [seqs["a"]], "b and c wait for their parents"
        assert scheduler.jobs[job["key"]].graph.waiting(seqs["c"])
        scheduler.state.check()
    finally:
        gate.set()
        await scheduler.close()
        database.close()


def test_a_completed_tasks_directory_still_goes_after_its_retention_time_across_a_restart(open_tmp: Path) -> None:
    """Retention is stored (store.kept_dirs) and swept once the port is open: a directory kept when the server
    stopped goes once its time has passed, one kept longer stays. The brief one is due before the restart, so
    the first sweep comes before its node is up again: it is tried again, not forgotten."""
    data = open_tmp / "data"
    server = EmbeddedServer(data).start()
    try:
        client = make_client(server)
        pool_id = create_pool_and_wait(client, nodes=1)
        client.create_job(models.BatchJobCreateOptions(id=JOB, pool_info=models.BatchPoolInfo(pool_id=pool_id)))
        for task_id, kept in (("brief", timedelta(seconds=BRIEF)), ("long", timedelta(days=1))):
            constraints = models.BatchTaskConstraints(retention_time=kept)
            client.create_task(
                JOB, models.BatchTaskCreateOptions(id=task_id, command_line="/bin/true", constraints=constraints)
            )
        done = wait_tasks_completed(client, JOB, timeout=120)
        node_id = done[0].node_info.node_id
        server.stop()
        assert sorted(p.parent.name for p in data.glob(f"nodes/**/workitems/{JOB}/job-1/*/stdout.txt")) == [
            "brief",
            "long",
        ], "both directories are kept when the server stops"
        brief_end = next(t.execution_info.end_time for t in done if t.id == "brief")
        time.sleep(max(0.0, (brief_end + timedelta(seconds=BRIEF + 1) - datetime.now(UTC)).total_seconds()))
        server.start()
        client = make_client(server)
        wait_for(lambda: client.get_node(pool_id, node_id).state == "idle", 90, "the node back after the restart")

        def gone(task_id: str) -> bool:
            try:
                read_node_file(client, pool_id, node_id, f"workitems/{JOB}/job-1/{task_id}/stdout.txt")
            except ResourceNotFoundError:
                return True
            return False

        wait_for(lambda: gone("brief"), 90, "the brief task's directory removed after the restart")
        assert not gone("long")
    finally:
        server.stop()
