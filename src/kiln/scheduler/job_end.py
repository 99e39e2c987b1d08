"""Ending jobs: terminate and delete kill what runs, run release where prep ran, then complete or remove."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from kiln import undo
from kiln.core import job as job_rules
from kiln.core import preparation as prep_rules
from kiln.core import task as task_rules
from kiln.core.job import JobState, TerminateReason
from kiln.core.preparation import StepState
from kiln.scheduler.parts import SchedulerParts
from kiln.scheduler.slots import NodeSlots
from kiln.scheduler.state import ON_NODE, Effects, JobEntry, transition
from kiln.store import rows as db
from kiln.wire.times import now as utcnow

log = logging.getLogger("kiln.scheduler")


class JobEnding(SchedulerParts):
    """Mixed into Scheduler; uses its lock, store, backend and in-memory maps."""

    # ------------------------------------------------------------------ job end
    async def terminate_job(self, job_key: str, reason: str) -> None:
        async with self.lock:
            effects = await self.db.write(lambda conn: self._end_job(conn, job_key, JobState.TERMINATING, reason))
        await self._act(effects)

    async def delete_job(self, job_key: str) -> None:
        async with self.lock:
            effects = await self.db.write(lambda conn: self._end_job(conn, job_key, JobState.DELETING, None))
        await self._act(effects)

    def _end_job(self, conn: Connection, job_key: str, to: JobState, reason: str | None) -> Effects:
        """Terminate or delete: kill what runs, run release where prep ran, then complete or remove the job."""
        from kiln.errors import NotFound

        effects = Effects()
        now = utcnow()
        job = db.get(conn, db.jobs, key=job_key)
        if job is None:
            raise NotFound("The specified job does not exist.", code="JobNotFound")
        was = JobState(job["state"])
        changes = job_rules.transition(job, to, now, reason=reason)
        if to is JobState.DELETING:
            changes["delete_requested"] = True
        transition(conn, db.jobs, {"key": job_key}, job, changes, bump_etag=True)
        undo.update(job, changes)
        if was is JobState.COMPLETED:  # nothing runs, release already ran: just remove
            self._remove_job(conn, job, effects)
            return effects
        entry = self.state.job_tracked(job)
        self._end_tasks_on_nodes(conn, job_key, now, effects, task_rules.ended_by("the job was ended."))
        if was is not JobState.TERMINATING:  # release already started by an earlier terminate
            self._start_releases(conn, entry, now, effects)
        self._finish_job_if_released(conn, job_key, now, effects)
        return effects

    def _end_tasks_on_nodes(
        self, conn: Connection, job_key: str, now: datetime, effects: Effects, failure: dict[str, Any]
    ) -> None:
        on_node = db.tasks_in_states(conn, ON_NODE, job_key=job_key)
        self._move_attempts_on(conn, self.state.job_ended(job_key, on_node, failure, now, effects))
        for task in on_node:
            self._end_instances(conn, task["seq"], now, effects)
        effects.write_batched(conn, counters=False)

    def _start_releases(self, conn: Connection, entry: JobEntry, now: datetime, effects: Effects) -> None:
        if entry.spec.get("jobReleaseTask") is None:
            return
        for (job_key, node_id), record in self.preps.items():
            node = self.nodes.get(node_id)
            if job_key != entry.key or node is None or not prep_rules.needs_release(record, node.incarnation):
                continue
            if node.up:
                self._run_release(conn, entry, node, record, now, effects)

    def _run_release(
        self,
        conn: Connection,
        entry: JobEntry,
        node: NodeSlots,
        record: dict[str, Any],
        now: datetime,
        effects: Effects,
    ) -> None:
        self.state.run_release(entry, node, record, now, effects)
        self._carry_out(conn, effects, now)

    def _releases_outstanding(self, entry: JobEntry) -> bool:
        if entry.spec.get("jobReleaseTask") is None:
            return False
        for (job_key, node_id), record in self.preps.items():
            node = self.nodes.get(node_id)
            if job_key != entry.key or node is None:
                continue
            if record["release_state"] == StepState.RUNNING or prep_rules.needs_release(record, node.incarnation):
                return True
        return False

    def _finish_job_if_released(self, conn: Connection, job_key: str, now: datetime, effects: Effects) -> None:
        entry = self.jobs.get(job_key)
        if entry is None or entry.row["state"] not in (JobState.TERMINATING, JobState.DELETING):
            return
        if self._releases_outstanding(entry):
            return
        if entry.row["state"] == JobState.DELETING:
            self._remove_job(conn, entry.row, effects)
            return
        changes = job_rules.transition(entry.row, JobState.COMPLETED, now)
        transition(conn, db.jobs, {"key": job_key}, entry.row, changes, bump_etag=True)
        effects.ended_jobs.append({**entry.row, **changes})
        self.state.job_forgotten(job_key, removed=False)

    def _remove_job(self, conn: Connection, job: dict[str, Any], effects: Effects) -> None:
        """Delete: rows go now, task directories on every node of the pool follow in the background."""
        db.delete_job_rows(conn, job["key"])
        effects.ended_jobs.append({**job, "removed": True})
        self.state.job_forgotten(job["key"], removed=True)
        for node in self.nodes.values():
            if node.pool_key == job["pool_key"] and node.up:
                effects.remove_dirs.append((node.node_id, f"workitems/{job['id']}"))

    async def _check_all_complete(self, job_key: str) -> None:
        """onAllTasksComplete=terminatejob: end the job once every task is completed."""
        entry = self.jobs.get(job_key)
        if entry is None or entry.row["state"] != JobState.ACTIVE:
            return
        if entry.spec.get("onAllTasksComplete") != "terminatejob":
            return
        if await self.db.read(lambda conn: db.all_tasks_completed(conn, job_key)):
            try:
                await self.terminate_job(job_key, TerminateReason.ALL_TASKS_COMPLETE.value)
            except Exception as exc:  # already ending by another path
                log.debug("all-complete terminate skipped: %s", exc)
