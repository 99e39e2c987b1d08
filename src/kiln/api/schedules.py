"""/jobschedules: create, read, list, exists, update (PATCH/PUT), disable, enable, terminate, delete, its jobs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from kiln.api import odata, render, statistics
from kiln.api.context import control, kiln
from kiln.api.http import (
    base_url,
    empty,
    entity_response,
    parse,
    read_json,
    read_model,
    seek_filter,
    seek_response,
    seek_window,
    write_conditions,
)
from kiln.commands import schedules
from kiln.errors import KilnError, MissingRequiredProperty
from kiln.wire import ids
from kiln.wire.models import JobAdd, JobScheduleAdd, JobScheduleUpdate, ScheduleConfiguration, prefix_property
from kiln.wire.times import now

router = APIRouter()


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
    row = await schedules.add(control(request), body.id, spec)
    return empty(201, request, row, location=f"{base_url(request)}/jobschedules/{body.id}")


@router.get("/jobschedules")
async def list_schedules(request: Request) -> Response:
    base, moment = base_url(request), now()
    shown = lambda r: render.job_schedule(r, base, moment)  # noqa: E731
    term, matches = seek_filter(request, odata.SCHEDULE_FILTERS, shown)
    after, count = seek_window(request, 0)
    page = await schedules.list_page(control(request), term, matches, after, count)
    return seek_response(request, page, "jobschedules", await statistics.owners(request, "schedule", page.rows, shown))


@router.get("/jobschedules/{schedule_id}")
async def get_schedule(request: Request, schedule_id: str) -> Response:
    row = await schedules.get(control(request), schedule_id)
    shown = await statistics.owners(
        request, "schedule", [row], lambda r: render.job_schedule(r, base_url(request), now())
    )
    return entity_response(request, shown(row), row, "jobschedules/@Element")


@router.head("/jobschedules/{schedule_id}")
async def schedule_exists(request: Request, schedule_id: str) -> Response:
    row = await schedules.get(control(request), schedule_id)
    return empty(200, request, row)


@router.get("/jobschedules/{schedule_id}/jobs")
async def list_schedule_jobs(request: Request, schedule_id: str) -> Response:
    base = base_url(request)
    shown = lambda r: render.job(r, base)  # noqa: E731
    term, matches = seek_filter(request, odata.SCHEDULE_JOBS_FILTERS, shown)
    after, count = seek_window(request, 0)
    page = await schedules.jobs_page(control(request), schedule_id, term, matches, after, count)
    return seek_response(request, page, "jobs", await statistics.owners(request, "job", page.rows, shown))


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
    row = await schedules.update(control(request), schedule_id, changes, write_conditions(request))
    return empty(200, request, row)


@router.patch("/jobschedules/{schedule_id}")
async def patch_schedule(request: Request, schedule_id: str) -> Response:
    return await _update_schedule(request, schedule_id, replace=False)


@router.put("/jobschedules/{schedule_id}")
async def replace_schedule(request: Request, schedule_id: str) -> Response:
    return await _update_schedule(request, schedule_id, replace=True)


@router.post("/jobschedules/{schedule_id}/disable")
async def disable_schedule(request: Request, schedule_id: str) -> Response:
    row = await schedules.set_enabled(control(request), schedule_id, False, write_conditions(request))
    return empty(204, request, row)


@router.post("/jobschedules/{schedule_id}/enable")
async def enable_schedule(request: Request, schedule_id: str) -> Response:
    row = await schedules.set_enabled(control(request), schedule_id, True, write_conditions(request))
    return empty(204, request, row)


@router.post("/jobschedules/{schedule_id}/terminate")
async def terminate_schedule(request: Request, schedule_id: str) -> Response:
    await schedules.terminate(control(request), schedule_id, write_conditions(request))
    return empty(202, request, await schedules.get(control(request), schedule_id))  # its new ETag, as Batch


@router.delete("/jobschedules/{schedule_id}")
async def delete_schedule(request: Request, schedule_id: str) -> Response:
    await schedules.delete(control(request), schedule_id, write_conditions(request))
    return empty(202, request)
