"""Auto pools (poolInfo.autoPoolSpecification): a pool made for a job or a job schedule, gone when it ends."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from kiln.core import pool as pool_rules
from kiln.core.job import JobState
from kiln.core.pool import PoolState
from kiln.core.schedule import ScheduleState
from kiln.scheduler.parts import SchedulerParts
from kiln.store import rows as db
from kiln.wire.models import AutoPoolSpecification, PoolLifetimeOption

log = logging.getLogger("kiln.scheduler")


def auto_pool_spec(pool_info: Mapping[str, Any]) -> dict[str, Any] | None:
    """The stored autoPoolSpecification of a job's (or job specification's) poolInfo, if it has one."""
    return pool_info.get("autoPoolSpecification")


def lives_with_job(pool_info: Mapping[str, Any]) -> bool:
    auto = auto_pool_spec(pool_info)
    return auto is not None and auto["poolLifetimeOption"] == PoolLifetimeOption.JOB


def new_pool_id(prefix: str | None) -> str:
    """A unique id, as the service assigns: a GUID, after `<prefix>_` when a prefix is given."""
    suffix = str(uuid.uuid4())
    return f"{prefix}_{suffix}" if prefix else suffix


def auto_pool_row(auto: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The row of the pool an autoPoolSpecification describes, with a new id: the caller stores it in its
    transaction (the job's or the schedule's) and starts it after the commit (`create_pool`)."""
    spec = AutoPoolSpecification.model_validate(auto)
    pool_id = new_pool_id(spec.auto_pool_id_prefix)
    add = spec.pool_add(pool_id)
    return pool_rules.new_row(
        pool_id,
        add.materialize(),
        target_dedicated=add.target_dedicated_nodes,
        target_low_priority=add.target_low_priority_nodes,
        slots_per_node=add.task_slots_per_node,
        now=now,
        etag=db.new_etag(),
    )


class AutoPools(SchedulerParts):
    """Mixed into Scheduler; uses its lock, store and pool operations."""

    async def delete_auto_pool(self, pool_id: str | None, auto: Mapping[str, Any] | None) -> None:
        """The lifetime the pool was made for has ended: delete it unless keepAlive (or it is already going)."""
        if pool_id is None or auto is None or auto.get("keepAlive"):
            return
        pool = self.pools.get(pool_id.lower())
        if pool is None or pool["state"] != PoolState.ACTIVE:
            return
        try:
            await self.delete_pool(pool["key"])
        except Exception as exc:  # deleted by the user meanwhile
            log.debug("auto pool %s not deleted: %s", pool_id, exc)

    async def _job_pool_ended(self, job: Mapping[str, Any]) -> None:
        """A job with its own auto pool (lifetime `job`) completed or was deleted: its pool goes too."""
        pool_info = job["spec"].get("poolInfo", {})
        if lives_with_job(pool_info):
            await self.delete_auto_pool(job.get("pool_id"), auto_pool_spec(pool_info))

    async def recover_auto_pools(self) -> None:
        """After a restart: delete the auto pools whose job or schedule ended while the server was going down."""

        def read(conn: Connection):
            jobs = [j for j in db.find(conn, db.jobs, state=JobState.COMPLETED.value) if j["pool_id"]]
            schedules = [
                s for s in db.find(conn, db.job_schedules, state=ScheduleState.COMPLETED.value) if s["pool_id"]
            ]
            return jobs, schedules

        jobs, schedules = await self.db.read(read)
        for job in jobs:
            await self._job_pool_ended(job)
        for schedule in schedules:
            await self.delete_auto_pool(
                schedule["pool_id"], auto_pool_spec(schedule["spec"]["jobSpecification"].get("poolInfo", {}))
            )
