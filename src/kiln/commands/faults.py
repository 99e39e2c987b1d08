"""Faults on demand (Kiln-specific): lose a node, fail the next preparation or start task on a node, fail the
next resource-file download on a node or of a job, slow the dispatch of steps to a node, kill a running task.
Each is noted in the story of the tasks it hits, caused by the request that asked for it; what follows (the
requeue, the failed prep, the task's exit) is Kiln's ordinary handling, as on Azure."""

from __future__ import annotations

import time

from sqlalchemy import Connection

from kiln import story
from kiln.commands import jobs, nodes, tasks
from kiln.commands.control import Control, Row
from kiln.core.task import TaskState, task_dir
from kiln.errors import Conflict
from kiln.scheduler.faults import KILL_TASK, LOSE_NODE, Asked, Slow, job_target, node_target
from kiln.store import rows as db
from kiln.wire.times import now

#: A task a fault can hit on its node: it holds the node's slots there.
_ON_NODE = (TaskState.RUNNING.value, TaskState.PREPARING.value)


def _note(task: Row, node_id: str, fault: str, detail: dict[str, object]) -> None:
    row = {"job_key": task["job_key"], "seq": task["seq"], "node_id": node_id}
    story.note("fault", row, None, fault, {}, detail, now())


async def _node(control: Control, pool_id: str, node_id: str) -> str:
    """The id of the pool's node (NodeNotFound, PoolNotFound)."""
    _, node = await control.database.read(lambda conn: nodes.load(conn, pool_id, node_id))
    return node["id"]


async def lose_node(control: Control, pool_id: str, node_id: str) -> int:
    """Its worker dies; its tasks go back to the queue (requeued) by the usual route. Returns how many
    tasks were on it."""

    def hit(conn: Connection) -> list[Row]:
        _, node = nodes.load(conn, pool_id, node_id)
        if not control.backend.is_up(node["id"]):
            raise Conflict(f"The compute node {node_id} has no worker running to lose.", code="NodeNotReady")
        on_node = [t for t in db.find(conn, db.tasks, node_id=node["id"]) if t["state"] in _ON_NODE]
        for task in on_node:
            _note(task, node["id"], LOSE_NODE, {})
        return on_node

    on_node = await control.database.write(hit)
    await control.backend.lose(node_id)
    return len(on_node)


async def fail_next_prep(control: Control, pool_id: str, node_id: str, exit_code: int) -> None:
    """The next job preparation task the node runs exits with exit_code instead of running."""
    node = await _node(control, pool_id, node_id)
    async with control.scheduler.lock:
        control.scheduler.faults.prep_exit_codes[node] = exit_code


async def fail_next_start(control: Control, pool_id: str, node_id: str, exit_code: int) -> None:
    """The next start task the node runs (at its next reboot, reimage or return) exits with exit_code."""
    node = await _node(control, pool_id, node_id)
    async with control.scheduler.lock:
        control.scheduler.faults.start_exit_codes[node] = Asked(exit_code, story.stimulus.get())


async def fail_next_node_download(control: Control, pool_id: str, node_id: str, status: int) -> None:
    """The next step with resource files sent to the node fails its first download with HTTP `status`."""
    node = await _node(control, pool_id, node_id)
    async with control.scheduler.lock:
        control.scheduler.faults.downloads[node_target(node)] = Asked(status, story.stimulus.get())


async def fail_next_job_download(control: Control, job_id: str, status: int) -> None:
    """The job's next step with resource files (task, preparation, release) fails its first download."""
    job = await control.database.read(lambda conn: jobs.load(conn, job_id))
    async with control.scheduler.lock:
        control.scheduler.faults.downloads[job_target(job["key"])] = Asked(status, story.stimulus.get())


async def slow_dispatch(
    control: Control, pool_id: str, node_id: str, delay: float, steps: int | None, seconds: float | None
) -> None:
    """Steps sent to the node wait `delay` seconds first: the next `steps` of them, or for `seconds`."""
    node = await _node(control, pool_id, node_id)
    until = None if seconds is None else time.monotonic() + seconds
    async with control.scheduler.lock:
        control.scheduler.faults.slow[node] = Slow(delay, story.stimulus.get(), steps, until)


async def kill_task(control: Control, job_id: str, task_id: str) -> int:
    """SIGKILL the running task's processes, as the OOM killer would: the node reports exit code 137 and the
    task's retry rules apply. Returns how many processes were killed."""

    def hit(conn: Connection) -> tuple[Row, Row]:
        job, task = tasks.load(conn, job_id, task_id)
        if task["state"] != TaskState.RUNNING.value or not task["node_id"]:
            raise Conflict(f"The task {task_id} is not running.", code="TaskNotRunning")
        _note(task, task["node_id"], KILL_TASK, {})
        return job, task

    job, task = await control.database.write(hit)
    killed = await control.backend.kill_processes(task["node_id"], task_dir(job["id"], task["id"]))
    if not killed:
        raise Conflict(f"The task {task_id} has no process running on its node yet.", code="TaskNotRunning")
    return killed
