"""Kiln-specific, outside Batch's routes: a task's story (its transitions with their stimuli) and why it
is where it is. Same Shared Key authentication as Batch's routes; no api-version."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from kiln.api.context import control
from kiln.api.http import json_response
from kiln.commands import stories
from kiln.wire.times import format_time

router = APIRouter()


@router.get("/kiln/jobs/{job_id}/tasks/{task_id}/story")
async def get_task_story(request: Request, job_id: str, task_id: str) -> Response:
    story = await stories.of_task(control(request), job_id, task_id)
    return json_response(
        {
            "jobId": story.job["id"],
            "taskId": story.task["id"],
            "state": story.task["state"],
            "why": story.why,
            "transitions": [_render(r) for r in story.transitions],
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
