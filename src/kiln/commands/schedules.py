"""Job schedules: add, read, list, update, disable, enable, terminate, delete, and their jobs."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from kiln.commands import applications
from kiln.commands.control import Check, Control, Matches, Row
from kiln.core import filters
from kiln.core import schedule as schedule_rules
from kiln.errors import Conflict, NotFound
from kiln.store import lists, seek
from kiln.store import rows as db
from kiln.wire import ids
from kiln.wire.times import now


def load(conn: Connection, schedule_id: str) -> Row:
    row = db.get(conn, db.job_schedules, key=ids.key(schedule_id))
    if row is None:
        raise NotFound("The specified job schedule does not exist.", code="JobScheduleNotFound")
    return row


async def get(control: Control, schedule_id: str) -> Row:
    return await control.database.read(lambda conn: load(conn, schedule_id))


async def list_page(control: Control, term: filters.Term | None, matches: Matches, after: int, count: int) -> seek.Page:
    """A page of the job schedules, in the order they were added, after the one with seq `after`."""
    return await control.database.read(lambda conn: lists.schedule_page(conn, term, after, count, matches))


async def jobs_page(
    control: Control, schedule_id: str, term: filters.Term | None, matches: Matches, after: int, count: int
) -> seek.Page:
    """A page of the jobs the schedule has made that still exist, oldest first."""

    def read(conn: Connection) -> seek.Page:
        return lists.job_page(conn, term, after, count, matches, schedule_key=load(conn, schedule_id)["key"])

    return await control.database.read(read)


async def add(control: Control, schedule_id: str, spec: dict[str, Any]) -> Row:
    """Insert the schedule (spec: its validated, stored form), then let the scheduler make its first job if due."""
    applications.check_job(control, spec["jobSpecification"], "jobSpecification.")
    row = schedule_rules.new_row(schedule_id, spec, now=now(), etag=db.new_etag())

    def insert(conn: Connection) -> None:
        if db.get(conn, db.job_schedules, key=row["key"]) is not None:
            raise Conflict("The specified job schedule already exists.", code="JobScheduleExists")
        if db.get(conn, db.jobs, key=row["key"]) is not None:
            raise Conflict(
                "A job with the same id exists; jobs and job schedules share ids.", code="JobWithSameIdExists"
            )
        row["seq"] = db.next_value(conn, "job_schedule")
        db.insert_rows(conn, db.job_schedules, [row])

    await control.database.write(insert)
    await control.scheduler.evaluate_schedule(row["key"])
    return row


async def update(control: Control, schedule_id: str, changes: dict[str, Any], check: Check) -> Row:
    """Merge `changes` (validated parts of the spec; a None metadata removes it) into an open schedule's spec.

    Under the schedule lock, so that no job is made from the spec half way; then the schedule is evaluated
    again, since its timing may have changed (jobs to come use the new spec)."""
    if "jobSpecification" in changes:
        applications.check_job(control, changes["jobSpecification"], "jobSpecification.")

    def write(conn: Connection) -> Row:
        row = load(conn, schedule_id)
        check(row)
        schedule_rules.check_open(row["state"])
        spec = {**row["spec"], **changes}
        if spec.get("metadata") is None:
            spec.pop("metadata", None)
        db.change(conn, db.job_schedules, {"key": row["key"]}, {"spec": spec, "last_modified": now()}, bump_etag=True)
        return db.reread(conn, db.job_schedules, key=row["key"])

    scheduler = control.scheduler
    async with scheduler.schedule_lock:
        row = await control.database.write(write)
    await scheduler.evaluate_schedule(row["key"])
    return row


async def _checked(control: Control, schedule_id: str, check: Check) -> Row:
    row = await get(control, schedule_id)
    check(row)
    return row


async def set_enabled(control: Control, schedule_id: str, enabled: bool, check: Check) -> Row:
    """Disable (no new jobs; the active one goes on) or enable; the schedule's row after."""
    row = await _checked(control, schedule_id, check)
    return await control.scheduler.set_schedule_enabled(row["key"], enabled)


async def terminate(control: Control, schedule_id: str, check: Check) -> None:
    row = await _checked(control, schedule_id, check)
    await control.scheduler.terminate_schedule(row["key"])


async def delete(control: Control, schedule_id: str, check: Check) -> None:
    row = await _checked(control, schedule_id, check)
    await control.scheduler.delete_schedule(row["key"])
