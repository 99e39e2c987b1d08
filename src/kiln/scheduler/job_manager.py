"""Per-job placement limits (maxParallelTasks, the job manager task) and the job manager's end of its job."""

from __future__ import annotations

import functools
import logging
from typing import Any

from sqlalchemy import Connection

from kiln.core.job import JobState, TerminateReason
from kiln.core.job_token import JobTokens
from kiln.core.task import TaskState
from kiln.scheduler import priority
from kiln.scheduler.parts import SchedulerParts
from kiln.scheduler.slots import NodeSlots
from kiln.scheduler.state import ON_NODE, JobEntry
from kiln.store import rows as db
from kiln.wire import ids

log = logging.getLogger("kiln.scheduler")

#: Job states in which a finished job manager with killJobOnCompletion still ends its job.
_ENDABLE = (JobState.ACTIVE, JobState.DISABLING, JobState.DISABLED, JobState.ENABLING)


class JobManagement(SchedulerParts):
    """Mixed into Scheduler; uses its store, in-memory jobs and `terminate_job`."""

    #: issues AZ_BATCH_AUTHENTICATION_TOKEN; set by the server from the account key
    job_tokens: JobTokens | None = None

    def _plan_pool(
        self, conn: Connection, pool: dict[str, Any], candidates: list[NodeSlots]
    ) -> list[tuple[JobEntry, int, int, NodeSlots]]:
        """Book queued tasks of the jobs in the pool's line on its nodes with free slots: [(job, task seq, slots,
        node)]. Only the jobs the free slots reach are looked at."""
        policy = pool["spec"].get("taskSchedulingPolicy") or {}
        fill = str(policy.get("nodeFillType", "spread")).lower()
        order = priority.job_order(pool["spec"])
        chooser = self._chooser(pool, fill)
        booked = priority.plan(
            self.state.line_of(pool["key"]),
            functools.partial(self.state.line_key, pool_key=pool["key"]),
            lambda job_key: self._turn(conn, self.jobs[job_key], chooser),
            candidates,
            fill,
            order,
        )
        for turn, _, _, _ in booked:
            turn.job.last_served = turn.served
        return [(turn.job, seq, slots, node) for turn, seq, slots, node in booked]

    def _turn(self, conn: Connection, entry: JobEntry, choose: priority.Chooser | None = None) -> priority.JobTurn:
        """What the placement round needs to know of one job with queued tasks."""
        limit = entry.spec.get("maxParallelTasks", -1)
        budget = (
            None if limit == -1 else priority.parallel_budget(limit, db.count_tasks_in_states(conn, entry.key, ON_NODE))
        )
        return priority.JobTurn(
            entry,
            entry.queue,
            entry.row["priority"],
            entry.row["seq"],
            budget,
            self._manager_rule(conn, entry),
            lambda node: self._may_run(entry, node),
            entry.last_served,
            entry.graph.waiting if entry.graph is not None else None,
            choose,
        )

    def _manager_rule(self, conn: Connection, entry: JobEntry) -> priority.ManagerRule | None:
        """The job manager's placement rule while it waits in the queue (first run, retry or requeue)."""
        spec = entry.spec.get("jobManagerTask")
        if spec is None:
            return None
        if entry.manager_seq is None:  # created with the job; looked up once (also after a restart)
            row = db.get(conn, db.tasks, job_key=entry.key, key=ids.key(spec["id"]))
            entry.manager_seq = row["seq"] if row is not None else -1
        if entry.manager_seq not in entry.queue.queued:
            return None
        return priority.ManagerRule(entry.manager_seq, bool(spec.get("runExclusive", True)))

    async def _check_job_manager(self, job_key: str) -> None:
        """killJobOnCompletion: once the job manager task has completed, terminate its job (JMComplete)."""
        entry = self.jobs.get(job_key)
        if entry is None:
            return
        spec = entry.spec.get("jobManagerTask")
        if spec is None or not spec.get("killJobOnCompletion", True) or entry.row["state"] not in _ENDABLE:
            return
        row = await self.db.read(lambda conn: db.get(conn, db.tasks, job_key=job_key, key=ids.key(spec["id"])))
        if row is None or row["state"] != TaskState.COMPLETED:
            return
        try:
            await self.terminate_job(job_key, TerminateReason.JOB_MANAGER.value)
        except Exception as exc:  # already ending by another path
            log.debug("job manager completion terminate skipped: %s", exc)
