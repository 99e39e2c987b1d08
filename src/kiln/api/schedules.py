"""/jobschedules: create, read, list, exists, update (PATCH/PUT), disable, enable, terminate, delete, its jobs."""

from __future__ import annotations

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
    list_response,
    parse,
    read_json,
    read_model,
)
from kiln.core import schedule as schedule_rules
from kiln.core.schedule import ScheduleState
from kiln.errors import Conflict, KilnError, MissingRequiredProperty, NotFound
from kiln.store import rows as db
from kiln.wire import ids
from kiln.wire.models import JobAdd, JobScheduleAdd, JobScheduleUpdate, ScheduleConfiguration, prefix_property
from kiln.wire.times import now

router = APIRouter()


def schedule_not_found() -> NotFound:
    return NotFound("The specified job schedule does not exist.", code="JobScheduleNotFound")


def load_schedule(conn: Connection, schedule_id: str) -> dict[str, Any]:
    row = db.get(conn, db.job_schedules, key=ids.key(schedule_id))
    if row is None:
        raise schedule_not_found()
    return row


def job_specification(data: Any) -> dict[str, Any]:
    """A jobSpecification validated as a job add without an id; stored with Batch's defaults written out."""
    if not isinstance(data, dict):
        raise MissingRequiredProperty("jobSpecification")
    try:
        spec = parse(JobAdd, {**data, "id": "jobspecification"})
        spec.check()
    except KilnError as error:
        prefix_property(error, "jobSpecification.")
        raise
    doc = spec.materialize()
    doc.pop("id", None)
    return doc


def schedule_configuration(request: Request, config: ScheduleConfiguration | None) -> dict[str, Any]:
    config = config or ScheduleConfiguration()
    config.check(kiln(request).min_schedule_interval)
    return config.materialize()


@router.post("/jobschedules")
async def add_schedule(request: Request) -> Response:
    body = await read_model(request, JobScheduleAdd)
    ids.check_id(body.id)
    spec: dict[str, Any] = {
        "schedule": schedule_configuration(request, body.schedule),
        "jobSpecification": job_specification(body.job_specification),
    }
    if body.display_name is not None:
        spec["displayName"] = body.display_name
    if body.metadata is not None:
        spec["metadata"] = [m.dump() for m in body.metadata]
    moment = now()
    row: dict[str, Any] = {
        "key": ids.key(body.id),
        "id": body.id,
        "spec": spec,
        "state": ScheduleState.ACTIVE.value,
        "state_transition_time": moment,
        "job_count": 0,
        "creation_time": moment,
        "last_modified": moment,
        "etag": db.new_etag(),
    }

    def insert(conn: Connection) -> None:
        if db.get(conn, db.job_schedules, key=row["key"]) is not None:
            raise Conflict("The specified job schedule already exists.", code="JobScheduleExists")
        if db.get(conn, db.jobs, key=row["key"]) is not None:
            raise Conflict(
                "A job with the same id exists; jobs and job schedules share ids.", code="JobWithSameIdExists"
            )
        row["seq"] = db.next_value(conn, "job_schedule")
        db.insert_rows(conn, db.job_schedules, [row])

    state = kiln(request)
    await state.database.write(insert)
    await state.scheduler.evaluate_schedule(row["key"])
    return empty(201, request, row, location=f"{base_url(request)}/jobschedules/{body.id}")


@router.get("/jobschedules")
async def list_schedules(request: Request) -> Response:
    rows = await kiln(request).database.read(lambda conn: db.find(conn, db.job_schedules, order_by=["seq"]))
    base, moment = base_url(request), now()
    return list_response(
        request, [render.job_schedule(r, base, moment) for r in rows], "jobschedules", odata.SCHEDULE_FILTERS
    )


@router.get("/jobschedules/{schedule_id}")
async def get_schedule(request: Request, schedule_id: str) -> Response:
    row = await kiln(request).database.read(lambda conn: load_schedule(conn, schedule_id))
    return entity_response(request, render.job_schedule(row, base_url(request), now()), row, "jobschedules/@Element")


@router.head("/jobschedules/{schedule_id}")
async def schedule_exists(request: Request, schedule_id: str) -> Response:
    row = await kiln(request).database.read(lambda conn: load_schedule(conn, schedule_id))
    return empty(200, request, row)


@router.get("/jobschedules/{schedule_id}/jobs")
async def list_schedule_jobs(request: Request, schedule_id: str) -> Response:
    def read(conn: Connection) -> list[dict[str, Any]]:
        row = load_schedule(conn, schedule_id)
        return db.find(conn, db.jobs, order_by=["seq"], schedule_key=row["key"])

    rows = await kiln(request).database.read(read)
    base = base_url(request)
    return list_response(request, [render.job(r, base) for r in rows], "jobs", odata.SCHEDULE_JOBS_FILTERS)


async def _update_schedule(request: Request, schedule_id: str, *, replace: bool) -> Response:
    update = parse(JobScheduleUpdate, await read_json(request))
    fields = update.model_fields_set
    if replace and update.job_specification is None:
        raise MissingRequiredProperty("jobSpecification")
    changes: dict[str, Any] = {}
    if replace or "schedule" in fields:
        changes["schedule"] = schedule_configuration(request, update.schedule)
    if update.job_specification is not None:
        changes["jobSpecification"] = job_specification(update.job_specification)
    if replace or "metadata" in fields:
        changes["metadata"] = [m.dump() for m in update.metadata] if update.metadata is not None else None
    state = kiln(request)

    def write(conn: Connection) -> dict[str, Any]:
        row = load_schedule(conn, schedule_id)
        check_write_conditions(request, row)
        schedule_rules.check_open(row["state"])
        spec = {**row["spec"], **changes}
        if spec.get("metadata") is None:
            spec.pop("metadata", None)
        db.change(conn, db.job_schedules, {"key": row["key"]}, {"spec": spec, "last_modified": now()}, bump_etag=True)
        return db.reread(conn, db.job_schedules, key=row["key"])

    async with state.scheduler.schedule_lock:
        row = await state.database.write(write)
    await state.scheduler.evaluate_schedule(row["key"])  # the timing may have changed; jobs to come use the new spec
    return empty(200, request, row)


@router.patch("/jobschedules/{schedule_id}")
async def patch_schedule(request: Request, schedule_id: str) -> Response:
    return await _update_schedule(request, schedule_id, replace=False)


@router.put("/jobschedules/{schedule_id}")
async def replace_schedule(request: Request, schedule_id: str) -> Response:
    return await _update_schedule(request, schedule_id, replace=True)


async def _checked_schedule(request: Request, schedule_id: str) -> dict[str, Any]:
    row = await kiln(request).database.read(lambda conn: load_schedule(conn, schedule_id))
    check_write_conditions(request, row)
    return row


@router.post("/jobschedules/{schedule_id}/disable")
async def disable_schedule(request: Request, schedule_id: str) -> Response:
    row = await _checked_schedule(request, schedule_id)
    row = await kiln(request).scheduler.set_schedule_enabled(row["key"], False)
    return empty(204, request, row)


@router.post("/jobschedules/{schedule_id}/enable")
async def enable_schedule(request: Request, schedule_id: str) -> Response:
    row = await _checked_schedule(request, schedule_id)
    row = await kiln(request).scheduler.set_schedule_enabled(row["key"], True)
    return empty(204, request, row)


@router.post("/jobschedules/{schedule_id}/terminate")
async def terminate_schedule(request: Request, schedule_id: str) -> Response:
    row = await _checked_schedule(request, schedule_id)
    await kiln(request).scheduler.terminate_schedule(row["key"])
    return empty(202, request)


@router.delete("/jobschedules/{schedule_id}")
async def delete_schedule(request: Request, schedule_id: str) -> Response:
    row = await _checked_schedule(request, schedule_id)
    await kiln(request).scheduler.delete_schedule(row["key"])
    return empty(202, request)
