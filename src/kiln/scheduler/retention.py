"""Timed job rules: job maxWallClockTime, and the retention of finished steps' directories."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from kiln.core.job import JobState, TerminateReason
from kiln.core.preparation import StepState
from kiln.scheduler import steps as step_builder
from kiln.scheduler.parts import SchedulerParts
from kiln.scheduler.state import Effects
from kiln.store import live
from kiln.store import rows as db
from kiln.wire.times import duration_seconds

log = logging.getLogger("kiln.scheduler")


class Retention(SchedulerParts):
    """Mixed into Scheduler; uses its lock, store, backend and in-memory maps."""

    # ------------------------------------------------------------------ timers
    def _arm_wall_clock(self, job: dict[str, Any]) -> None:
        """Job maxWallClockTime counts from creation; when it passes, the job ends like a terminate."""
        seconds = duration_seconds(job["spec"].get("constraints", {}).get("maxWallClockTime"))
        key = f"wallclock:{job['key']}"
        if seconds is None:
            self.timers.cancel(key)
            return

        async def expire() -> None:
            entry = self.jobs.get(job["key"])
            if entry is not None and entry.row["state"] in (JobState.ACTIVE, JobState.DISABLING, JobState.DISABLED):
                await self.terminate_job(job["key"], TerminateReason.WALL_CLOCK.value)

        self.timers.schedule(key, job["creation_time"] + timedelta(seconds=seconds), expire)

    def _retain_task(self, effects: Effects, job: dict[str, Any], task: dict[str, Any]) -> None:
        retain_task(effects, job, task, self.subtask_nodes.get(task["seq"], ()))

    def _retain_job_step(self, effects: Effects, job: dict[str, Any], record: dict[str, Any], kind: str) -> None:
        spec = job["spec"]["jobPreparationTask" if kind == "prep" else "jobReleaseTask"]
        retention = spec["constraints"].get("retentionTime") if kind == "prep" else spec.get("retentionTime")
        retain(effects, record["node_id"], job["id"], spec["id"], retention, record.get(f"{kind}_end_time"))

    async def _rearm_retention(self) -> None:
        """After a restart, behind the open port: re-arm the cleanup of every finished step whose directory is
        still kept. Completed tasks are read a part at a time, job by job, with only the columns retention needs,
        so that a long history is never in memory at once."""
        jobs = await self.db.read(lambda conn: {j["key"]: j for j in db.find(conn, db.jobs)})
        for job in jobs.values():
            after = -1
            while part := await self.db.read(functools.partial(live.completed, job_key=job["key"], after_seq=after)):
                effects = Effects()
                for task in part:
                    self._retain_task(effects, job, task)
                await self._act(effects)
                after = part[-1]["seq"]
        effects = Effects()
        for record in await self.db.read(lambda conn: db.find(conn, db.preparations)):
            owner = jobs.get(record["job_key"])
            for kind in ("prep", "release"):
                if owner is not None and record[f"{kind}_state"] == StepState.COMPLETED:
                    self._retain_job_step(effects, owner, record, kind)
        await self._act(effects)


def retain(
    effects: Effects, node_id: str | None, job_id: str, step_id: str, retention: str | None, ended: datetime | None
) -> None:
    """A finished step's directory stays readable for its retentionTime, then goes."""
    seconds = duration_seconds(retention)
    if node_id and ended is not None and seconds is not None:
        effects.retain.append((node_id, step_builder.task_dir(job_id, step_id), ended + timedelta(seconds=seconds)))


def retain_task(effects: Effects, job: dict[str, Any], task: dict[str, Any], subtask_nodes: Iterable[str]) -> None:
    """A completed task's directory on its node, and on its subtasks' nodes if it ran as a multi-instance task."""
    for node_id in (task["node_id"], *subtask_nodes):
        retain(
            effects,
            node_id,
            job["id"],
            task["id"],
            task["spec"]["constraints"].get("retentionTime"),
            task.get("end_time"),
        )
