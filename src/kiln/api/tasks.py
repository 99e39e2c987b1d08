"""/jobs/{job}/tasks: add (one or a collection), read, list, update, terminate, delete."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from kiln.api import odata, render, selection, statistics
from kiln.api.context import control
from kiln.api.http import (
    base_url,
    empty,
    entity_response,
    error_body,
    json_response,
    metadata_url,
    parse,
    read_json,
    read_model,
    seek_filter,
    seek_response,
    seek_window,
    write_conditions,
)
from kiln.commands import tasks
from kiln.errors import BadRequest, KilnError
from kiln.wire.models import TaskAdd, TaskUpdate
from kiln.wire.times import format_time

router = APIRouter()
MAX_COLLECTION = 100


def _validated(data: Any) -> TaskAdd | KilnError:
    try:
        if not isinstance(data, dict):
            raise BadRequest("Each task must be a JSON object.", code="InvalidRequestBody")
        spec = parse(TaskAdd, data)
        spec.check()
        return spec
    except KilnError as error:
        error.task_id = data.get("id") if isinstance(data, dict) else None  # type: ignore[attr-defined]
        return error


@router.post("/jobs/{job_id}/tasks")
async def add_task(request: Request, job_id: str) -> Response:
    spec = _validated(await read_json(request))
    if isinstance(spec, KilnError):
        raise spec
    job, outcomes = await tasks.add(control(request), job_id, [spec])
    if isinstance(outcomes[0], KilnError):
        raise outcomes[0]
    row = outcomes[0]
    return empty(201, request, row, location=f"{base_url(request)}/jobs/{job['id']}/tasks/{row['id']}")


@router.post("/jobs/{job_id}/addtaskcollection")
async def add_task_collection(request: Request, job_id: str) -> Response:
    body = await read_json(request)
    values = body.get("value")
    if not isinstance(values, list) or not values:
        raise BadRequest(
            "The request body must have a non-empty 'value' list of tasks.",
            code="MissingRequiredProperty",
            values={"PropertyName": "value"},
        )
    if len(values) > MAX_COLLECTION:
        raise BadRequest(
            f"A task collection may hold at most {MAX_COLLECTION} tasks; this one has {len(values)}.",
            code="TooManyTasksInCollection",
            values={"PropertyName": "value"},
        )
    specs = [_validated(v) for v in values]
    await asyncio.sleep(0)  # a collection takes a while: let the nodes' results in between its parts
    job, outcomes = await tasks.add(control(request), job_id, specs)
    await asyncio.sleep(0)
    base = base_url(request)
    results = []
    for data, outcome in zip(values, outcomes):
        if isinstance(outcome, KilnError):
            task_id = data.get("id") if isinstance(data, dict) else None
            status = "servererror" if outcome.status >= 500 else "clienterror"
            results.append({"status": status, "taskId": task_id, "error": error_body(request, outcome)})
        else:
            results.append(
                {
                    "status": "success",
                    "taskId": outcome["id"],
                    "eTag": outcome["etag"],
                    "lastModified": format_time(outcome["last_modified"]),
                    "location": f"{base}/jobs/{job['id']}/tasks/{outcome['id']}",
                }
            )
    return json_response(
        {
            "odata.metadata": metadata_url(request, "Microsoft.Azure.Batch.Protocol.Entities.TaskAddCollectionResult"),
            "value": results,
        }
    )


@router.get("/jobs/{job_id}/tasks")
async def list_tasks(request: Request, job_id: str) -> Response:
    """A page read by index where the filter allows (keyset: it reads on from the last task of the page before);
    with `$select`, only the columns its properties are rendered from."""
    base = base_url(request)
    term, matches = seek_filter(request, odata.TASK_FILTERS, lambda r: render.task(r, job_id, base))
    after, count = seek_window(request, 0)
    columns = render.task_columns(selection.selected(request, "tasks"))
    job, page = await tasks.list_page(control(request), job_id, term, matches, after, count, columns)
    rendered = render.task if columns is None else render.trimmed_task
    shown = await statistics.tasks(request, page.rows, lambda r: rendered(r, job["id"], base))
    return seek_response(request, page, "tasks", shown)


@router.get("/jobs/{job_id}/tasks/{task_id}")
async def get_task(request: Request, job_id: str, task_id: str) -> Response:
    job, row = await tasks.get(control(request), job_id, task_id)
    shown = await statistics.tasks(request, [row], lambda r: render.task(r, job["id"], base_url(request)))
    return entity_response(request, shown(row), row, "tasks/@Element")


@router.put("/jobs/{job_id}/tasks/{task_id}")
async def update_task(request: Request, job_id: str, task_id: str) -> Response:
    """PUT replaces the constraints: what the body leaves out takes its default (the job's retry count)."""
    update = await read_model(request, TaskUpdate)
    if update.constraints is not None:
        update.constraints.check()
    row = await tasks.update(control(request), job_id, task_id, update.constraints, write_conditions(request))
    return empty(200, request, row)


@router.delete("/jobs/{job_id}/tasks/{task_id}")
async def delete_task(request: Request, job_id: str, task_id: str) -> Response:
    await tasks.delete(control(request), job_id, task_id, write_conditions(request))
    return empty(200, request)


@router.post("/jobs/{job_id}/tasks/{task_id}/terminate")
async def terminate_task(request: Request, job_id: str, task_id: str) -> Response:
    await tasks.terminate(control(request), job_id, task_id, write_conditions(request))
    return empty(204, request)


@router.post("/jobs/{job_id}/tasks/{task_id}/reactivate")
async def reactivate_task(request: Request, job_id: str, task_id: str) -> Response:
    await tasks.reactivate(control(request), job_id, task_id, write_conditions(request))
    return empty(204, request)


@router.get("/jobs/{job_id}/tasks/{task_id}/subtasksinfo")
async def list_subtasks(request: Request, job_id: str, task_id: str) -> Response:
    """The subtasks (ids 1..n-1) of a multi-instance task's current or last run; none for other tasks."""
    job, task, rows = await tasks.subtasks(control(request), job_id, task_id)
    base = base_url(request)
    docs = [render.subtask(r, job["id"], task["id"], base) for r in rows]
    select = selection.checked_select(request, "subtaskinfo")
    return json_response(
        {"odata.metadata": metadata_url(request, "subtaskinfo"), "value": [odata.apply_select(d, select) for d in docs]}
    )
