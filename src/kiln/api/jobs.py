"""/jobs: create, read, list, update, terminate, delete, task counts, prep/release status."""

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
    json_response,
    list_response,
    metadata_url,
    parse,
    read_json,
    read_model,
)
from kiln.core import job as job_rules
from kiln.core.job import DisableTasks, JobState, TerminateReason
from kiln.errors import BadRequest, Conflict, InvalidPropertyValue, MissingRequiredProperty, NotFound
from kiln.store import rows as db
from kiln.wire import ids
from kiln.wire.models import JobAdd, JobConstraints, JobDisable, JobPatch, JobTerminate, PoolInfo, PoolLifetimeOption
from kiln.wire.times import UNLIMITED, now

router = APIRouter()


def job_not_found() -> NotFound:
    return NotFound("The specified job does not exist.", code="JobNotFound")


def load_job(conn: Connection, job_id: str) -> dict[str, Any]:
    row = db.get(conn, db.jobs, key=ids.key(job_id))
    if row is None:
        raise job_not_found()
    return row


@router.post("/jobs")
async def add_job(request: Request) -> Response:
    spec = await read_model(request, JobAdd)
    spec.check()
    auto = spec.pool_info.auto_pool_specification
    if auto is not None and auto.pool_lifetime_option is not PoolLifetimeOption.JOB:
        raise InvalidPropertyValue(
            "poolInfo.autoPoolSpecification.poolLifetimeOption",
            auto.pool_lifetime_option.value,
            "A job's auto pool must have poolLifetimeOption 'job'; 'jobschedule' is for job schedules only.",
        )
    state = kiln(request)
    moment = now()
    doc = spec.materialize()
    row = job_rules.new_row(
        spec.id, doc, pool_key=ids.key(spec.pool_info.pool_id or ""), now=moment, etag=db.new_etag()
    )

    def insert(conn: Connection) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        if db.get(conn, db.jobs, key=row["key"]) is not None:
            raise Conflict("The specified job already exists.", code="JobExists")
        if db.get(conn, db.job_schedules, key=row["key"]) is not None:
            raise Conflict(
                "A job schedule with the same id exists; jobs and job schedules share ids.",
                code="JobScheduleWithSameIdExists",
            )
        pool = None
        if auto is not None:
            pool = state.scheduler.insert_auto_pool(conn, doc["poolInfo"]["autoPoolSpecification"], moment)
            row["pool_key"], row["pool_id"] = pool["key"], pool["id"]
        manager = job_rules.manager_task(row, now=moment, etag=db.new_etag())
        db.add_job(conn, row, manager)
        return pool, manager

    pool, manager = await state.database.write(insert)
    if pool is not None:
        await state.scheduler.create_pool(pool)
    state.scheduler.job_created(row, manager)
    return empty(201, request, row, location=f"{base_url(request)}/jobs/{spec.id}")


@router.get("/jobs")
async def list_jobs(request: Request) -> Response:
    rows = await kiln(request).database.read(lambda conn: db.find(conn, db.jobs, order_by=["seq"]))
    base = base_url(request)
    return list_response(request, rows, "jobs", odata.JOB_FILTERS, lambda r: render.job(r, base))


@router.get("/jobs/{job_id}")
async def get_job(request: Request, job_id: str) -> Response:
    row = await kiln(request).database.read(lambda conn: load_job(conn, job_id))
    return entity_response(request, render.job(row, base_url(request)), row, "jobs/@Element")


def _apply_update(row: dict[str, Any], update: JobPatch, *, replace: bool) -> dict[str, Any]:
    """The job's spec after PATCH (present fields change) or PUT (absent fields reset to defaults)."""
    spec = dict(row["spec"])
    fields = update.model_fields_set
    if replace and update.pool_info is None:
        raise MissingRequiredProperty("poolInfo")
    if "pool_info" in fields and update.pool_info is not None:
        new_info = _pool_info_doc(update.pool_info)
        if row["state"] != JobState.DISABLED and not _only_keep_alive_differs(spec["poolInfo"], new_info):
            raise Conflict("The job's poolInfo can be changed only while the job is disabled.", code="JobNotDisabled")
        spec["poolInfo"] = new_info
    if update.max_parallel_tasks is not None and update.max_parallel_tasks != -1 and update.max_parallel_tasks < 1:
        raise InvalidPropertyValue(
            "maxParallelTasks", update.max_parallel_tasks, "maxParallelTasks must be -1 (unlimited) or greater than 0."
        )
    if update.on_all_tasks_complete is not None:
        if spec["onAllTasksComplete"] == "terminatejob" and update.on_all_tasks_complete.value == "noaction":
            raise InvalidPropertyValue(
                "onAllTasksComplete",
                "noaction",
                "onAllTasksComplete cannot be changed from terminatejob back to noaction.",
            )
    elif replace and spec["onAllTasksComplete"] == "terminatejob":
        raise InvalidPropertyValue(
            "onAllTasksComplete",
            None,
            "A PUT without onAllTasksComplete sets it to "
            "noaction, and it cannot go from terminatejob back to noaction.",
        )
    defaults = {
        "priority": 0,
        "maxParallelTasks": -1,
        "allowTaskPreemption": False,
        "constraints": {"maxWallClockTime": UNLIMITED, "maxTaskRetryCount": 0},
        "onAllTasksComplete": "noaction",
        "metadata": None,
    }
    given = update.dump()
    for name, default in defaults.items():
        if name in given:
            value = given[name]
            if name == "constraints":
                value = {**defaults["constraints"], **JobConstraints.model_validate(value).dump()}
            spec[name] = value
        elif replace:
            spec[name] = default
    if spec.get("metadata") is None:
        spec.pop("metadata", None)
    return spec


def _pool_info_doc(info: PoolInfo) -> dict[str, Any]:
    auto = info.auto_pool_specification
    return {"autoPoolSpecification": auto.materialize()} if auto is not None else info.dump()


def _only_keep_alive_differs(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """An auto pool's keepAlive may change at any time (lifetime job); the rest of poolInfo only while disabled."""

    def without_keep_alive(info: dict[str, Any]) -> dict[str, Any]:
        auto = info.get("autoPoolSpecification")
        if auto is None or auto.get("poolLifetimeOption") != PoolLifetimeOption.JOB:
            return info
        return {**info, "autoPoolSpecification": {k: v for k, v in auto.items() if k != "keepAlive"}}

    return without_keep_alive(old) == without_keep_alive(new)


async def _update_job(request: Request, job_id: str, *, replace: bool) -> Response:
    update = parse(JobPatch, await read_json(request))
    state = kiln(request)

    def write(conn: Connection) -> dict[str, Any]:
        row = load_job(conn, job_id)
        check_write_conditions(request, row)
        job_rules.check_open(row["state"])
        spec = _apply_update(row, update, replace=replace)
        changes = {"spec": spec, "priority": spec["priority"], "last_modified": now()}
        db.change(conn, db.jobs, {"key": row["key"]}, changes, bump_etag=True)
        return db.get(conn, db.jobs, key=row["key"])

    row = await state.database.write(write)
    state.scheduler.job_updated(row)
    return empty(200, request, row)


@router.patch("/jobs/{job_id}")
async def patch_job(request: Request, job_id: str) -> Response:
    return await _update_job(request, job_id, replace=False)


@router.put("/jobs/{job_id}")
async def replace_job(request: Request, job_id: str) -> Response:
    return await _update_job(request, job_id, replace=True)


async def _checked_job(request: Request, job_id: str) -> dict[str, Any]:
    row = await kiln(request).database.read(lambda conn: load_job(conn, job_id))
    check_write_conditions(request, row)
    return row


@router.delete("/jobs/{job_id}")
async def delete_job(request: Request, job_id: str) -> Response:
    row = await _checked_job(request, job_id)
    await kiln(request).scheduler.delete_job(row["key"])
    return empty(202, request)


@router.post("/jobs/{job_id}/terminate")
async def terminate_job(request: Request, job_id: str) -> Response:
    body = parse(JobTerminate, await read_json(request, optional=True))
    row = await _checked_job(request, job_id)
    await kiln(request).scheduler.terminate_job(row["key"], body.terminate_reason or TerminateReason.USER.value)
    return empty(202, request)


@router.post("/jobs/{job_id}/disable")
async def disable_job(request: Request, job_id: str) -> Response:
    body = parse(JobDisable, await read_json(request))
    row = await kiln(request).database.read(lambda conn: load_job(conn, job_id))
    await kiln(request).scheduler.disable_job(
        row["key"], DisableTasks(body.disable_tasks.value), lambda job: check_write_conditions(request, job)
    )
    return empty(202, request)


@router.post("/jobs/{job_id}/enable")
async def enable_job(request: Request, job_id: str) -> Response:
    row = await kiln(request).database.read(lambda conn: load_job(conn, job_id))
    await kiln(request).scheduler.enable_job(row["key"], lambda job: check_write_conditions(request, job))
    return empty(202, request)


@router.get("/jobs/{job_id}/taskcounts")
async def task_counts(request: Request, job_id: str) -> Response:
    def read(conn: Connection):
        row = load_job(conn, job_id)
        return db.task_counts(conn, row["key"])

    groups = await kiln(request).database.read(read)
    counts = {name: 0 for name in ("active", "running", "completed", "succeeded", "failed")}
    slots = dict(counts)
    for group in groups:
        bucket = "running" if group["state"] == "preparing" else group["state"]
        counts[bucket] += group["n"]
        slots[bucket] += group["slots"] or 0
        if group["state"] == "completed" and group["result"] in ("success", "failure"):
            outcome = "succeeded" if group["result"] == "success" else "failed"
            counts[outcome] += group["n"]
            slots[outcome] += group["slots"] or 0
    return json_response(
        {"odata.metadata": metadata_url(request, "taskcounts/@Element"), "taskCounts": counts, "taskSlotCounts": slots}
    )


@router.get("/jobs/{job_id}/jobpreparationandreleasetaskstatus")
async def preparation_status(request: Request, job_id: str) -> Response:
    def read(conn: Connection):
        row = load_job(conn, job_id)
        return row, db.find(conn, db.preparations, order_by=["prep_start_time", "node_id"], job_key=row["key"])

    row, records = await kiln(request).database.read(read)
    if not row["spec"].get("jobPreparationTask") and not row["spec"].get("jobReleaseTask"):
        raise Conflict(
            "The specified job does not have a job preparation or job release task.",
            code="JobPreparationTaskOrReleaseTaskNotSpecified",
        )
    base = base_url(request)
    docs = [
        render.preparation_status(r, row, base)
        for r in records
        if r["prep_state"] != "pending" or r["release_state"] != "pending"
    ]
    return list_response(request, docs, "jobpreparationandreleasetaskstatuslist", odata.PREP_RELEASE_FILTERS)


__all__ = ["router", "load_job", "BadRequest"]
