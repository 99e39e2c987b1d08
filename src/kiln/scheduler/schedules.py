"""Job schedules at run time: create `<scheduleId>:job-<n>` when an occurrence is due, end with the schedule.

The store holds everything a schedule needs (state, the due time of its latest job, its job count, its
auto pool), so after a restart each schedule is simply evaluated again: `core.schedule.plan` recomputes
what is due and when to look next. One timer per schedule wakes the evaluation; the end of any of the
schedule's jobs wakes it too (the next occurrence may have been waiting for that job).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from kiln import undo
from kiln.core import job as job_rules
from kiln.core import schedule as schedule_rules
from kiln.core.job import TerminateReason
from kiln.core.pool import PoolState
from kiln.core.schedule import ScheduleState, timing
from kiln.errors import KilnError
from kiln.scheduler.auto_pools import auto_pool_row, auto_pool_spec
from kiln.scheduler.parts import SchedulerParts
from kiln.scheduler.state import transition
from kiln.store import rows as db
from kiln.wire.models import PoolLifetimeOption
from kiln.wire.times import now as utcnow

log = logging.getLogger("kiln.scheduler")


def schedule_jobs(conn: Connection, schedule_key: str) -> list[dict[str, Any]]:
    """The schedule's jobs, oldest first."""
    return db.find(conn, db.jobs, order_by=["seq"], schedule_key=schedule_key)


@dataclass(slots=True)
class Outcome:
    """What one evaluation decided, to carry out after its transaction committed."""

    job: dict[str, Any] | None = None  #: the job it created
    manager: dict[str, Any] | None = None  #: that job's job manager task
    pools: list[dict[str, Any]] = field(default_factory=list)  #: auto pools it created
    wake: datetime | None = None  #: when to evaluate again
    ended: dict[str, Any] | None = None  #: the schedule row, if it completed or was removed now


class JobSchedules(SchedulerParts):
    """Mixed into Scheduler; uses its store, timers, job operations and auto pools."""

    # ------------------------------------------------------------------ evaluation
    async def evaluate_schedule(self, key: str) -> None:
        """Create the due job (if any and none is active), complete or remove the schedule, re-arm its timer."""
        async with self.schedule_lock:
            outcome = await self.db.write(lambda conn: self._step_schedule(conn, key, utcnow()))
            for pool in outcome.pools:
                await self.create_pool(pool)
            if outcome.job is not None:
                self.job_created(outcome.job, outcome.manager)
        timer = f"schedule:{key}"
        if outcome.wake is not None:
            self.timers.schedule(timer, outcome.wake, lambda: self.evaluate_schedule(key))
        else:
            self.timers.cancel(timer)
        if outcome.ended is not None:
            auto = auto_pool_spec(outcome.ended["spec"]["jobSpecification"].get("poolInfo", {}))
            if auto is not None and auto["poolLifetimeOption"] == PoolLifetimeOption.JOBSCHEDULE:
                await self.delete_auto_pool(outcome.ended.get("pool_id"), auto)

    def _step_schedule(self, conn: Connection, key: str, now: datetime) -> Outcome:
        outcome = Outcome()
        row = db.get(conn, db.job_schedules, key=key)
        if row is None or row["state"] == ScheduleState.COMPLETED:
            return outcome
        if row["state"] == ScheduleState.DELETING:
            if not schedule_jobs(conn, key):  # every job is gone: so is the schedule
                db.remove(conn, db.job_schedules, key=key)
                outcome.ended = row
            return outcome
        current = db.active_schedule_job(conn, key)
        if row["state"] == ScheduleState.TERMINATING:
            if current is None:
                self._complete_schedule(conn, row, now, outcome)
            return outcome
        rule = timing(row["spec"].get("schedule") or {}, row["creation_time"])
        plan = schedule_rules.plan(rule, row["last_due"], now)
        if row["state"] == ScheduleState.ACTIVE and plan.due is not None and current is None:
            current = self._create_schedule_job(conn, row, plan.due, now, outcome)
            plan = schedule_rules.plan(rule, plan.due, now)
        if row["state"] == ScheduleState.ACTIVE and plan.exhausted and current is None:
            self._complete_schedule(conn, row, now, outcome)
            return outcome
        outcome.wake = plan.wake
        return outcome

    def _complete_schedule(self, conn: Connection, row: dict[str, Any], now: datetime, outcome: Outcome) -> None:
        changes = schedule_rules.transition(row, ScheduleState.COMPLETED, now)
        transition(conn, db.job_schedules, {"key": row["key"]}, row, changes, bump_etag=True)
        outcome.ended = {**row, **changes}

    def _create_schedule_job(
        self, conn: Connection, row: dict[str, Any], due: datetime, now: datetime, outcome: Outcome
    ) -> dict[str, Any]:
        """Job `<scheduleId>:job-<n>` from the current jobSpecification, on its pool or a new auto pool."""
        spec = dict(row["spec"]["jobSpecification"])
        number = row["job_count"] + 1
        job_id = f"{row['id']}:job-{number}"
        pool_info = spec.get("poolInfo", {})
        auto = auto_pool_spec(pool_info)
        schedule_changes: dict[str, Any] = {"last_due": due, "job_count": number, "recent_job_id": job_id}
        if auto is None:
            pool_key, pool_id = pool_info["poolId"].lower(), None
        else:
            pool = None
            if auto["poolLifetimeOption"] == PoolLifetimeOption.JOBSCHEDULE and row.get("pool_id"):
                pool = db.get(conn, db.pools, key=row["pool_id"].lower())  # the schedule's pool, made for job 1
            if pool is None or pool["state"] != PoolState.ACTIVE:  # none yet, or deleted by the user: a new one
                pool = auto_pool_row(auto, now)
                db.insert_rows(conn, db.pools, [pool])
                outcome.pools.append(pool)
                if auto["poolLifetimeOption"] == PoolLifetimeOption.JOBSCHEDULE:
                    schedule_changes["pool_id"] = pool["id"]
            pool_key, pool_id = pool["key"], pool["id"]
        job = job_rules.new_row(
            job_id, spec, pool_key=pool_key, pool_id=pool_id, schedule_key=row["key"], now=now, etag=db.new_etag()
        )
        outcome.manager = job_rules.manager_task(job, now=now, etag=db.new_etag())
        db.add_job(conn, job, outcome.manager)
        db.change(conn, db.job_schedules, {"key": row["key"]}, schedule_changes)  # job-level: no new ETag
        outcome.job = job
        return job

    # ------------------------------------------------------------------ job ends and recovery
    async def _schedule_job_ended(self, job: dict[str, Any]) -> None:
        if job.get("schedule_key"):
            await self.evaluate_schedule(job["schedule_key"])

    async def recover_schedules(self) -> None:
        """After a restart: evaluate every schedule that is not over (re-arms timers, makes missed due jobs)."""
        rows = await self.db.read(lambda conn: db.find(conn, db.job_schedules, order_by=["seq"]))
        for row in rows:
            if row["state"] != ScheduleState.COMPLETED:
                await self.evaluate_schedule(row["key"])

    # ------------------------------------------------------------------ API-facing operations
    async def set_schedule_enabled(self, key: str, enabled: bool) -> dict[str, Any]:
        """disable (no new jobs; the active one goes on) or enable; a schedule already so is left as it is."""
        target = ScheduleState.ACTIVE if enabled else ScheduleState.DISABLED

        def write(conn: Connection) -> dict[str, Any]:
            row = self._load_schedule(conn, key)
            schedule_rules.check_open(row["state"])
            if row["state"] != target:
                changes = schedule_rules.transition(row, target, utcnow())
                transition(conn, db.job_schedules, {"key": key}, row, changes, bump_etag=True)
                undo.update(row, changes)
            return row

        async with self.schedule_lock:
            row = await self.db.write(write)
        await self.evaluate_schedule(key)
        return row

    async def terminate_schedule(self, key: str) -> None:
        """terminating; its active job is terminated (TerminateJobSchedule); completed when that job is."""
        async with self.schedule_lock:
            current = await self.db.write(lambda conn: self._begin_end(conn, key, ScheduleState.TERMINATING))
        if current:
            await self._end_schedule_job(current[0]["key"], delete=False)
        await self.evaluate_schedule(key)

    async def delete_schedule(self, key: str) -> None:
        """deleting; every job of the schedule is deleted; the schedule goes when the last one has."""
        async with self.schedule_lock:
            jobs = await self.db.write(lambda conn: self._begin_end(conn, key, ScheduleState.DELETING))
        for job in jobs:
            await self._end_schedule_job(job["key"], delete=True)
        await self.evaluate_schedule(key)

    def _begin_end(self, conn: Connection, key: str, to: ScheduleState) -> list[dict[str, Any]]:
        """Enter terminating or deleting; the jobs to end: the active one, or (delete) all of them."""
        row = self._load_schedule(conn, key)
        changes = schedule_rules.transition(row, to, utcnow())
        transition(conn, db.job_schedules, {"key": key}, row, changes, bump_etag=True)
        if to is ScheduleState.DELETING:
            return schedule_jobs(conn, key)
        current = db.active_schedule_job(conn, key)
        return [current] if current is not None else []

    async def _end_schedule_job(self, job_key: str, *, delete: bool) -> None:
        try:
            if delete:
                await self.delete_job(job_key)
            else:
                await self.terminate_job(job_key, TerminateReason.SCHEDULE.value)
        except KilnError as exc:  # already ending (e.g. terminated by the user): its end wakes the schedule
            log.debug("schedule job %s already ending: %s", job_key, exc)

    @staticmethod
    def _load_schedule(conn: Connection, key: str) -> dict[str, Any]:
        row = db.get(conn, db.job_schedules, key=key)
        if row is None:
            from kiln.errors import NotFound

            raise NotFound("The specified job schedule does not exist.", code="JobScheduleNotFound")
        return row
