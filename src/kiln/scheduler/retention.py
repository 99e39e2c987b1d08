"""Timed job rules: job maxWallClockTime, and the retention of finished steps' directories."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from kiln.core import task as task_rules
from kiln.core.job import JobState, TerminateReason
from kiln.core.task import TaskState
from kiln.scheduler import steps as step_builder
from kiln.scheduler.parts import SchedulerParts
from kiln.scheduler.state import Effects
from kiln.store import kept_dirs
from kiln.wire.times import duration_seconds, now

log = logging.getLogger("kiln.scheduler")
#: directories deleted per read of the due ones
SWEEP_PART = 200
SWEEP_RETRY = timedelta(seconds=15)  #: a directory the sweep could not delete is tried again this much later


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

    def _retain_job_step(self, effects: Effects, job: dict[str, Any], record: dict[str, Any], kind: str) -> None:
        spec = job["spec"]["jobPreparationTask" if kind == "prep" else "jobReleaseTask"]
        retention = spec["constraints"].get("retentionTime") if kind == "prep" else spec.get("retentionTime")
        retain(effects, record["node_id"], job, spec["id"], retention, record.get(f"{kind}_end_time"))

    # ------------------------------------------------------------------ the sweep
    def _sweep_by(self, due: datetime | None) -> None:
        """The sweep runs at the earliest due time it has been told of (one timer, whatever the history)."""
        if due is not None and (self._sweep_due is None or due < self._sweep_due):
            self._sweep_due = due
            self.timers.schedule("retention", due, self._sweep)

    async def _sweep(self) -> None:
        """Delete the directories whose time has come, a part at a time, then wait for the next due time."""
        self._sweep_due = None
        part = await self.db.read(lambda conn: kept_dirs.due(conn, now(), SWEEP_PART))
        failed: list[kept_dirs.Kept] = []
        for kept in (k for k in part if k.node_id in self.nodes):  # a node that left took its directories
            try:
                await self.backend.delete_file(kept.node_id, kept.path, True)
            except FileNotFoundError:
                pass
            except Exception as exc:  # e.g. its node not up yet after a restart: the directory is still there
                log.warning("retention cleanup of %s on %s failed, tried again later: %s", kept.path, kept.node_id, exc)
                failed.append(kept)
        deleted = [k for k in part if k not in failed]

        def record(conn: Connection) -> None:
            kept_dirs.swept(conn, deleted)
            kept_dirs.postpone(conn, failed, now() + SWEEP_RETRY)

        await self.db.write(record)
        self._sweep_by(await self.db.read(kept_dirs.next_due))

    async def task_updated(self, job: dict[str, Any], task: dict[str, Any]) -> None:
        """A new retentionTime applies to a task that already completed, counted from its end, on every node
        its directory is kept on."""
        due = task_rules.kept_until(task.get("end_time"), task["spec"]["constraints"].get("retentionTime"))
        if task["state"] != TaskState.COMPLETED or due is None:
            return
        path = step_builder.task_dir(job["id"], task["id"])
        await self.db.write(lambda conn: kept_dirs.move(conn, job["key"], path, due))
        self._sweep_by(due)


def retain(
    effects: Effects,
    node_id: str | None,
    job: dict[str, Any],
    step_id: str,
    retention: str | None,
    ended: datetime | None,
) -> None:
    """A finished step's directory stays readable for its retentionTime, then goes."""
    due = task_rules.kept_until(ended, retention)
    if node_id and due is not None:
        effects.retain.append(kept_dirs.Kept(node_id, step_builder.task_dir(job["id"], step_id), job["key"], due))


def retain_task(effects: Effects, job: dict[str, Any], task: dict[str, Any], subtask_nodes: Iterable[str]) -> None:
    """A completed task's directory on its node, and on its subtasks' nodes if it ran as a multi-instance task."""
    for node_id in (task["node_id"], *subtask_nodes):
        retain(
            effects, node_id, job, task["id"], task["spec"]["constraints"].get("retentionTime"), task.get("end_time")
        )
