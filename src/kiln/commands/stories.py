"""A task's story: its transitions with their stimuli, and why it is where it is (Kiln-specific)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection

from kiln.commands.control import Control, Row
from kiln.commands.tasks import load
from kiln.core.task import TaskState
from kiln.scheduler.why import parent_ids, why
from kiln.store import rows as db
from kiln.store.stories import task_story
from kiln.wire import ids


@dataclass(frozen=True, slots=True)
class Story:
    job: Row
    task: Row
    why: str
    transitions: list[Row]


async def of_task(control: Control, job_id: str, task_id: str) -> Story:
    def read(conn: Connection) -> tuple[Row, Row, Row, list[Row]]:
        job, task = load(conn, job_id, task_id)
        parents: Row = {}
        if task["state"] == TaskState.ACTIVE and task["spec"].get("dependsOn"):
            parents = db.task_outcomes(conn, job["key"], [ids.key(p) for p in parent_ids(task)])
        return job, task, parents, task_story(conn, job["key"], task["seq"])

    job, task, parents, transitions = await control.database.read(read)
    async with control.scheduler.lock:  # on PostgreSQL the scheduler changes its memory on the store's thread
        said = why(control.scheduler, job, task, parents)
    return Story(job, task, said, transitions)
