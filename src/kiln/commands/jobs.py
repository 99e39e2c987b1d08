"""Jobs: add, read, list, update, delete, terminate, disable, enable, task counts, prep and release status."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from kiln.commands import applications
from kiln.commands.control import Check, Control, Matches, Row
from kiln.core import filters
from kiln.core import job as job_rules
from kiln.core.job import DisableTasks, JobState
from kiln.errors import Conflict, InvalidPropertyValue, MissingRequiredProperty, NotFound
from kiln.scheduler.auto_pools import auto_pool_row
from kiln.store import lists, seek
from kiln.store import rows as db
from kiln.wire import ids
from kiln.wire.models import JobAdd, JobConstraints, JobPatch, PoolInfo, PoolLifetimeOption
from kiln.wire.times import UNLIMITED, now

#: The task count buckets of GET taskcounts (taskCounts and taskSlotCounts alike).
COUNT_BUCKETS = ("active", "running", "completed", "succeeded", "failed")


def load(conn: Connection, job_id: str) -> Row:
    row = db.get(conn, db.jobs, key=ids.key(job_id))
    if row is None:
        raise NotFound("The specified job does not exist.", code="JobNotFound")
    return row


async def find(control: Control, job_id: str) -> Row | None:
    return await control.database.read(lambda conn: db.get(conn, db.jobs, key=ids.key(job_id)))


async def get(control: Control, job_id: str) -> Row:
    return await control.database.read(lambda conn: load(conn, job_id))


async def list_page(control: Control, term: filters.Term | None, matches: Matches, after: int, count: int) -> seek.Page:
    """A page of the jobs, in the order they were added, after the job with seq `after`."""
    return await control.database.read(lambda conn: lists.job_page(conn, term, after, count, matches))


async def add(control: Control, spec: JobAdd) -> Row:
    """Insert the job with its job manager task (and its auto pool), then hand them to the scheduler."""
    auto = spec.pool_info.auto_pool_specification
    if auto is not None and auto.pool_lifetime_option is not PoolLifetimeOption.JOB:
        raise InvalidPropertyValue(
            "poolInfo.autoPoolSpecification.poolLifetimeOption",
            auto.pool_lifetime_option.value,
            "A job's auto pool must have poolLifetimeOption 'job'; 'jobschedule' is for job schedules only.",
        )
    scheduler = control.scheduler
    moment = now()
    doc = spec.materialize()
    applications.check_job(control, doc)
    row = job_rules.new_row(
        spec.id, doc, pool_key=ids.key(spec.pool_info.pool_id or ""), now=moment, etag=db.new_etag()
    )

    def insert(conn: Connection) -> tuple[Row | None, Row | None]:
        if db.get(conn, db.jobs, key=row["key"]) is not None:
            raise Conflict("The specified job already exists.", code="JobExists")
        if db.get(conn, db.job_schedules, key=row["key"]) is not None:
            raise Conflict(
                "A job schedule with the same id exists; jobs and job schedules share ids.",
                code="JobScheduleWithSameIdExists",
            )
        pool = None
        if auto is not None:
            pool = auto_pool_row(doc["poolInfo"]["autoPoolSpecification"], moment)
            db.insert_rows(conn, db.pools, [pool])
            row["pool_key"], row["pool_id"] = pool["key"], pool["id"]
        manager = job_rules.manager_task(row, now=moment, etag=db.new_etag())
        db.add_job(conn, row, manager)
        return pool, manager

    pool, manager = await control.database.write(insert)
    if pool is not None:
        await scheduler.create_pool(pool)
    scheduler.job_created(row, manager)
    return row


async def update(control: Control, job_id: str, update: JobPatch, check: Check, *, replace: bool) -> Row:
    """PATCH (replace=False) or PUT the job's updatable properties."""

    def write(conn: Connection) -> Row:
        row = load(conn, job_id)
        check(row)
        job_rules.check_open(row["state"])
        spec = _updated_spec(row, update, replace=replace)
        changes = {"spec": spec, "priority": spec["priority"], "last_modified": now()}
        db.change(conn, db.jobs, {"key": row["key"]}, changes, bump_etag=True)
        return db.reread(conn, db.jobs, key=row["key"])

    row = await control.database.write(write)
    control.scheduler.job_updated(row)
    return row


def _updated_spec(row: Row, update: JobPatch, *, replace: bool) -> dict[str, Any]:
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
    defaults: dict[str, Any] = {
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


async def _checked(control: Control, job_id: str, check: Check) -> Row:
    row = await get(control, job_id)
    check(row)
    return row


async def delete(control: Control, job_id: str, check: Check) -> None:
    row = await _checked(control, job_id, check)
    await control.scheduler.delete_job(row["key"])


async def terminate(control: Control, job_id: str, reason: str, check: Check) -> None:
    row = await _checked(control, job_id, check)
    await control.scheduler.terminate_job(row["key"], reason)


async def disable(control: Control, job_id: str, option: DisableTasks, check: Check) -> None:
    """The scheduler runs `check` on the row inside its transaction."""
    row = await get(control, job_id)
    await control.scheduler.disable_job(row["key"], option, check)


async def enable(control: Control, job_id: str, check: Check) -> None:
    row = await get(control, job_id)
    await control.scheduler.enable_job(row["key"], check)


async def task_counts(control: Control, job_id: str) -> tuple[dict[str, int], dict[str, int]]:
    """(taskCounts, taskSlotCounts): a preparing task counts as running; succeeded and failed split completed."""

    def read(conn: Connection) -> list[Row]:
        return db.task_counts(conn, load(conn, job_id)["key"])

    counts = dict.fromkeys(COUNT_BUCKETS, 0)
    slots = dict(counts)
    for group in await control.database.read(read):
        bucket = "running" if group["state"] == "preparing" else group["state"]
        counts[bucket] += group["n"]
        slots[bucket] += group["slots"] or 0
        if group["state"] == "completed" and group["result"] in ("success", "failure"):
            outcome = "succeeded" if group["result"] == "success" else "failed"
            counts[outcome] += group["n"]
            slots[outcome] += group["slots"] or 0
    return counts, slots


async def preparation_page(
    control: Control, job_id: str, term: filters.Term | None, matches: Matches, after: str, count: int
) -> tuple[Row, seek.Page]:
    """The job and a page of its (job, node) records where its preparation or release task has started, in
    the order of node ids; matches: the whole filter on (record, job)."""

    def read(conn: Connection) -> tuple[Row, seek.Page]:
        row = load(conn, job_id)
        page = lists.preparation_page(conn, row["key"], term, after, count, lambda record: matches((record, row)))
        return row, page

    row, page = await control.database.read(read)
    if not row["spec"].get("jobPreparationTask") and not row["spec"].get("jobReleaseTask"):
        raise Conflict(
            "The specified job does not have a job preparation or job release task.",
            code="JobPreparationTaskOrReleaseTaskNotSpecified",
        )
    return row, page
