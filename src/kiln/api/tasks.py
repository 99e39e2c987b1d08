"""/jobs/{job}/tasks: add (one or a collection), read, list, update, terminate, delete."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import Connection

from kiln.api import odata, render
from kiln.api.context import kiln
from kiln.api.http import (
    base_url,
    check_write_conditions,
    empty,
    entity_response,
    error_body,
    json_response,
    list_response,
    metadata_url,
    parse,
    read_json,
    read_model,
    unfiltered_window,
)
from kiln.api.jobs import load_job
from kiln.core import dependencies as dependency_rules
from kiln.core import exit_conditions as exit_rules
from kiln.core import job as job_rules
from kiln.core import task as task_rules
from kiln.errors import BadRequest, Conflict, KilnError, NotFound
from kiln.store import rows as db
from kiln.wire import ids
from kiln.wire.models import TaskAdd, TaskUpdate, materialize_constraints
from kiln.wire.times import format_time, now

router = APIRouter()
MAX_COLLECTION = 100
MAX_BODY = 1024 * 1024


def load_task(conn: Connection, job_id: str, task_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    job = load_job(conn, job_id)
    task = db.get(conn, db.tasks, job_key=job["key"], key=ids.key(task_id))
    if task is None:
        raise NotFound("The specified task does not exist.", code="TaskNotFound")
    return job, task


def _check_against_job(job: dict[str, Any], spec: TaskAdd) -> None:
    for kind, code in (
        ("jobPreparationTask", "TaskIdSameAsJobPreparationTask"),
        ("jobReleaseTask", "TaskIdSameAsJobReleaseTask"),
    ):
        other = job["spec"].get(kind)
        if other and other["id"].lower() == spec.id.lower():
            raise Conflict(f"The task id is the same as the id of the job's {kind}.", code=code)
    dependency_rules.check_allowed(job["spec"], spec.depends_on.dump() if spec.depends_on is not None else None)
    exit_rules.check_allowed(job["spec"], spec.exit_conditions.dump() if spec.exit_conditions is not None else None)


async def _store(request: Request, job_id: str, specs: list[TaskAdd | KilnError]) -> tuple[dict, list]:
    """Insert the tasks and hand them to the scheduler.

    In a job with dependencies the scheduler indexes them in the same transaction (on the store's one
    thread, where completions and deletions update the same graph), and queues only those free to run.
    """
    scheduler = kiln(request).scheduler

    def write(conn: Connection) -> tuple[dict, list]:
        job, outcomes = _insert(conn, job_id, specs)
        if job["spec"].get("usesTaskDependencies"):
            scheduler.dependent_tasks_added(job["key"], [o for o in outcomes if isinstance(o, dict)])
        return job, outcomes

    job, outcomes = await kiln(request).database.write(write)
    if job["spec"].get("usesTaskDependencies"):
        scheduler.wake()
    else:
        scheduler.tasks_added(job["key"], [(o["seq"], o["required_slots"]) for o in outcomes if isinstance(o, dict)])
    return job, outcomes


def _insert(conn: Connection, job_id: str, specs: list[TaskAdd | KilnError]) -> tuple[dict, list]:
    """Insert the valid tasks of one request; each gets a row or an error (add-collection is not transactional)."""
    job = load_job(conn, job_id)
    job_rules.check_open(job["state"])
    moment = now()
    retries = job["spec"]["constraints"]["maxTaskRetryCount"]
    outcomes: list[dict[str, Any] | KilnError] = []
    seen: set[str] = set()
    wanted = [ids.key(s.id) for s in specs if not isinstance(s, KilnError)]
    existing = db.task_seqs(conn, job["key"], wanted)
    for spec in specs:
        if isinstance(spec, KilnError):
            outcomes.append(spec)
            continue
        try:
            _check_against_job(job, spec)
            key = ids.key(spec.id)
            if key in existing or key in seen:
                raise Conflict("The specified task already exists.", code="TaskExists")
            seen.add(key)
            outcomes.append(task_rules.new_row(job["key"], spec.materialize(retries), now=moment, etag=db.new_etag()))
        except KilnError as error:
            outcomes.append(error)
    db.insert_tasks(conn, job["key"], [o for o in outcomes if isinstance(o, dict)], moment)
    return job, outcomes


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
    job, outcomes = await _store(request, job_id, [spec])
    if isinstance(outcomes[0], KilnError):
        raise outcomes[0]
    row = outcomes[0]
    return empty(201, request, row, location=f"{base_url(request)}/jobs/{job['id']}/tasks/{row['id']}")


@router.post("/jobs/{job_id}/addtaskcollection")
async def add_task_collection(request: Request, job_id: str) -> Response:
    if len(await request.body()) > MAX_BODY:
        raise KilnError(
            "The request body is too large; send at most 1 MB and 100 tasks per call.",
            code="RequestBodyTooLarge",
            status=413,
        )
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
    job, outcomes = await _store(request, job_id, specs)
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
    window = unfiltered_window(request)

    def read(conn: Connection):
        job = load_job(conn, job_id)
        return job, db.find(conn, db.tasks, order_by=["seq"], window=window, job_key=job["key"])

    job, rows = await kiln(request).database.read(read)
    base = base_url(request)
    return list_response(
        request,
        rows,
        "tasks",
        odata.TASK_FILTERS,
        lambda r: render.task(r, job["id"], base),
        offset=window[0] if window else 0,
    )


@router.get("/jobs/{job_id}/tasks/{task_id}")
async def get_task(request: Request, job_id: str, task_id: str) -> Response:
    job, row = await kiln(request).database.read(lambda conn: load_task(conn, job_id, task_id))
    return entity_response(request, render.task(row, job["id"], base_url(request)), row, "tasks/@Element")


@router.put("/jobs/{job_id}/tasks/{task_id}")
async def update_task(request: Request, job_id: str, task_id: str) -> Response:
    """PUT replaces the constraints: what the body leaves out takes its default (the job's retry count)."""
    update = await read_model(request, TaskUpdate)
    if update.constraints is not None:
        update.constraints.check()
    state = kiln(request)

    def write(conn: Connection) -> tuple[dict[str, Any], dict[str, Any]]:
        job, row = load_task(conn, job_id, task_id)
        check_write_conditions(request, row)
        job_rules.check_open(job["state"])
        spec = dict(row["spec"])
        spec["constraints"] = materialize_constraints(
            update.constraints, job["spec"]["constraints"]["maxTaskRetryCount"]
        )
        changes = {"spec": spec, "max_retries": spec["constraints"]["maxTaskRetryCount"], "last_modified": now()}
        db.change(conn, db.tasks, {"seq": row["seq"]}, changes, bump_etag=True)
        state.scheduler.task_row_changed(row)
        return job, db.reread(conn, db.tasks, seq=row["seq"])

    job, row = await state.database.write(write)
    await state.scheduler.task_updated(job, row)
    return empty(200, request, row)


async def _checked_task(request: Request, job_id: str, task_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    job, row = await kiln(request).database.read(lambda conn: load_task(conn, job_id, task_id))
    check_write_conditions(request, row)
    return job, row


@router.delete("/jobs/{job_id}/tasks/{task_id}")
async def delete_task(request: Request, job_id: str, task_id: str) -> Response:
    job, row = await _checked_task(request, job_id, task_id)
    await kiln(request).scheduler.end_task(job["key"], row["key"], delete=True)
    return empty(200, request)


@router.post("/jobs/{job_id}/tasks/{task_id}/terminate")
async def terminate_task(request: Request, job_id: str, task_id: str) -> Response:
    job, row = await _checked_task(request, job_id, task_id)
    await kiln(request).scheduler.end_task(job["key"], row["key"], delete=False)
    return empty(204, request)


@router.post("/jobs/{job_id}/tasks/{task_id}/reactivate")
async def reactivate_task(request: Request, job_id: str, task_id: str) -> Response:
    job, row = await kiln(request).database.read(lambda conn: load_task(conn, job_id, task_id))
    await kiln(request).scheduler.reactivate_task(
        job["key"], row["key"], lambda task: check_write_conditions(request, task)
    )
    return empty(204, request)


@router.get("/jobs/{job_id}/tasks/{task_id}/subtasksinfo")
async def list_subtasks(request: Request, job_id: str, task_id: str) -> Response:
    """The subtasks (ids 1..n-1) of a multi-instance task's current or last run; none for other tasks."""

    def read(conn: Connection):
        job, task = load_task(conn, job_id, task_id)
        return job, task, [r for r in db.find(conn, db.subtasks, order_by=["id"], task_seq=task["seq"]) if r["id"] > 0]

    job, task, rows = await kiln(request).database.read(read)
    base = base_url(request)
    docs = [render.subtask(r, job["id"], task["id"], base) for r in rows]
    select = request.query_params.get("$select")
    return json_response(
        {"odata.metadata": metadata_url(request, "subtaskinfo"), "value": [odata.apply_select(d, select) for d in docs]}
    )
