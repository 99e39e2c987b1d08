"""Kiln-specific, outside Batch's routes: a task's story (its transitions with their stimuli) and why it
is where it is. Same Shared Key authentication as Batch's routes; no api-version."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import Connection

from kiln.api.context import kiln
from kiln.api.http import json_response
from kiln.api.tasks import load_task
from kiln.core.task import TaskState
from kiln.scheduler.why import parent_ids, why
from kiln.store import rows as db
from kiln.store.stories import task_story
from kiln.wire import ids
from kiln.wire.times import format_time

router = APIRouter()


@router.get("/kiln/jobs/{job_id}/tasks/{task_id}/story")
async def get_task_story(request: Request, job_id: str, task_id: str) -> Response:
    state = kiln(request)

    def read(conn: Connection) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
        job, task = load_task(conn, job_id, task_id)
        parents: dict[str, Any] = {}
        if task["state"] == TaskState.ACTIVE and task["spec"].get("dependsOn"):
            parents = db.task_outcomes(conn, job["key"], [ids.key(p) for p in parent_ids(task)])
        return job, task, parents, task_story(conn, job["key"], task["seq"])

    job, task, parents, transitions = await state.database.read(read)
    async with state.scheduler.lock:  # on PostgreSQL the scheduler changes its memory on the store's thread
        said = why(state.scheduler, job, task, parents)
    return json_response(
        {
            "jobId": job["id"],
            "taskId": task["id"],
            "state": task["state"],
            "why": said,
            "transitions": [_render(r) for r in transitions],
        }
    )


def _render(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "at": format_time(record["at"]),
        "kind": record["kind"],
        "nodeId": record["node_id"],
        "from": record["from_state"],
        "to": record["to_state"],
        "stimulus": record["stimulus"],
        "detail": record["detail"],
    }
