"""What a task's completion does beyond itself: release the tasks that depend on it, act on its job.

The dependency graph of each job that uses task dependencies lives in memory (JobEntry.graph). The
store keeps the facts it is built from (each task's dependsOn, state, attempt, and the
dependencyAction its exit conditions decided at completion), and `_rebuild_dependencies` reads them
back after a restart in time linear in tasks plus edges, holding the live tasks only.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection

from kiln.core import exit_conditions as exit_rules
from kiln.core import job as job_rules
from kiln.core.dependencies import Rebuild
from kiln.core.exit_conditions import ExitOptions, JobAction
from kiln.core.job import DisableTasks, JobState, TerminateReason
from kiln.core.task import TaskState
from kiln.scheduler.parts import SchedulerParts
from kiln.scheduler.state import Effects
from kiln.store import live
from kiln.store import rows as db

#: Tasks added to a graph being rebuilt between two turns of the loop.
REBUILD_PART = 20_000
#: The job's onTaskFailure under which exit options' jobAction is carried out.
PERFORM_JOB_ACTION = "performexitoptionsjobaction"


def exit_options(task: dict[str, Any], exit_code: int | None, *, upload_error: bool = False) -> ExitOptions:
    """The exit options of a task whose process exited (or never started: exit_code None)."""
    return exit_rules.resolve(
        task["spec"].get("exitConditions"),
        exit_code=exit_code,
        pre_processing_error=exit_code is None,
        upload_error=upload_error,
    )


class TaskOutcomes(SchedulerParts):
    """Mixed into Scheduler; uses its lock, store and in-memory maps."""

    def dependent_tasks_added(self, conn: Connection, job_key: str, rows: Iterable[dict[str, Any]]) -> None:
        """Called inside the transaction that inserts them (the caller wakes the loop): ControlState's, with the
        job's stored tasks to say which parents the graph no longer holds completed with satisfy."""
        self.state.dependent_tasks_added(job_key, rows, lambda keys: set(db.task_seqs(conn, job_key, keys)))

    def _take_job_actions(self, conn: Connection, effects: Effects) -> None:
        """exitOptions.jobAction, acted on only under onTaskFailure=performexitoptionsjobaction."""
        actions, effects.job_actions = effects.job_actions, []
        for job_key, action in actions:
            entry = self.jobs.get(job_key)
            if entry is None or entry.spec.get("onTaskFailure") != PERFORM_JOB_ACTION:
                continue
            state = JobState(entry.row["state"])
            if action is JobAction.TERMINATE and (state, JobState.TERMINATING) in job_rules.TRANSITIONS:
                effects.merge(self._end_job(conn, job_key, JobState.TERMINATING, TerminateReason.TASK_FAILED.value))
            elif action is JobAction.DISABLE and state is JobState.ACTIVE:
                # as Azure: the job disable operation with disableTasks=requeue
                effects.merge(self._disable_job(conn, job_key, DisableTasks.REQUEUE, lambda _: None))

    async def _rebuild_dependencies(self, job_key: str) -> None:
        """After a restart, behind the open port: the job's graph (core.dependencies.Rebuild: its completed tasks
        a part at a time, then the others), then its queue of those free to run. Reads are on a reader thread
        and the graph is built on the loop a part at a time, so requests are served meanwhile; adds to the job
        wait for it (`dependencies_known`), and nothing else changes the graph while the fill holds the lock."""
        entry = self.jobs.get(job_key)
        if entry is None or entry.graph is None:
            return
        rebuild, after = Rebuild(entry.graph), -1
        while part := await self.db.read(
            functools.partial(live.completed_part, job_key=job_key, after_seq=after, count=REBUILD_PART)
        ):
            rebuild.completed(part)
            after = part[-1].seq
            await asyncio.sleep(0)
        uncompleted = await self.db.read(functools.partial(live.dependency_rows, job_key=job_key))
        named = rebuild.uncompleted(uncompleted)
        stored = set(await self.db.read(lambda conn: db.task_seqs(conn, job_key, named))) if named else set()
        for _ in rebuild.add(stored, REBUILD_PART):
            await asyncio.sleep(0)
        active = [(row["seq"], row["required_slots"]) for row in uncompleted if row["state"] == TaskState.ACTIVE]
        entry.queue_active(active)  # those that wait for parents stay out
