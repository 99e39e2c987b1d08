"""/jobs: create, read, list, update, terminate, delete, task counts, prep/release status."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from kiln.api import odata, render, statistics
from kiln.api.context import control
from kiln.api.http import (
    base_url,
    empty,
    entity_response,
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
from kiln.commands import jobs
from kiln.core.job import DisableTasks, TerminateReason
from kiln.wire.models import JobAdd, JobDisable, JobPatch, JobTerminate

router = APIRouter()


@router.post("/jobs")
async def add_job(request: Request) -> Response:
    spec = await read_model(request, JobAdd)
    spec.check()
    row = await jobs.add(control(request), spec)
    return empty(201, request, row, location=f"{base_url(request)}/jobs/{spec.id}")


@router.get("/jobs")
async def list_jobs(request: Request) -> Response:
    base = base_url(request)
    shown = lambda r: render.job(r, base)  # noqa: E731
    term, matches = seek_filter(request, odata.JOB_FILTERS, shown)
    after, count = seek_window(request, 0)
    page = await jobs.list_page(control(request), term, matches, after, count)
    return seek_response(request, page, "jobs", await statistics.owners(request, "job", page.rows, shown))


@router.get("/jobs/{job_id}")
async def get_job(request: Request, job_id: str) -> Response:
    row = await jobs.get(control(request), job_id)
    shown = await statistics.owners(request, "job", [row], lambda r: render.job(r, base_url(request)))
    return entity_response(request, shown(row), row, "jobs/@Element")


async def _update_job(request: Request, job_id: str, *, replace: bool) -> Response:
    update = parse(JobPatch, await read_json(request))
    update.check()
    row = await jobs.update(control(request), job_id, update, write_conditions(request), replace=replace)
    return empty(200, request, row)


@router.patch("/jobs/{job_id}")
async def patch_job(request: Request, job_id: str) -> Response:
    return await _update_job(request, job_id, replace=False)


@router.put("/jobs/{job_id}")
async def replace_job(request: Request, job_id: str) -> Response:
    return await _update_job(request, job_id, replace=True)


@router.delete("/jobs/{job_id}")
async def delete_job(request: Request, job_id: str) -> Response:
    await jobs.delete(control(request), job_id, write_conditions(request))
    return empty(202, request)


@router.post("/jobs/{job_id}/terminate")
async def terminate_job(request: Request, job_id: str) -> Response:
    body = parse(JobTerminate, await read_json(request, optional=True))
    reason = body.terminate_reason or TerminateReason.USER.value
    await jobs.terminate(control(request), job_id, reason, write_conditions(request))
    return await _changed(request, job_id)


@router.post("/jobs/{job_id}/disable")
async def disable_job(request: Request, job_id: str) -> Response:
    body = parse(JobDisable, await read_json(request))
    await jobs.disable(control(request), job_id, DisableTasks(body.disable_tasks.value), write_conditions(request))
    return await _changed(request, job_id)


@router.post("/jobs/{job_id}/enable")
async def enable_job(request: Request, job_id: str) -> Response:
    await jobs.enable(control(request), job_id, write_conditions(request))
    return await _changed(request, job_id)


async def _changed(request: Request, job_id: str) -> Response:
    """202 with the job's new ETag and Last-Modified, as Batch answers a terminate, disable or enable."""
    return empty(202, request, await jobs.get(control(request), job_id))


@router.get("/jobs/{job_id}/taskcounts")
async def task_counts(request: Request, job_id: str) -> Response:
    counts, slots = await jobs.task_counts(control(request), job_id)
    return json_response(
        {"odata.metadata": metadata_url(request, "taskcounts/@Element"), "taskCounts": counts, "taskSlotCounts": slots}
    )


@router.get("/jobs/{job_id}/jobpreparationandreleasetaskstatus")
async def preparation_status(request: Request, job_id: str) -> Response:
    base = base_url(request)

    def doc(pair: tuple) -> dict:
        record, job = pair
        return render.preparation_status(record, job, base)

    term, matches = seek_filter(request, odata.PREP_RELEASE_FILTERS, doc)
    after, count = seek_window(request, "")
    row, page = await jobs.preparation_page(control(request), job_id, term, matches, after, count)
    fragment = "jobpreparationandreleasetaskstatuslist"
    return seek_response(request, page, fragment, lambda record: render.preparation_status(record, row, base))
