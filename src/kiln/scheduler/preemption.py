"""allowTaskPreemption: running tasks of lower-priority jobs make way for a higher-priority job's tasks.

As on Azure, a job that allows preemption may have its running tasks requeued (requeueCount + 1, not a
retry) when a job of higher priority on the same pool has tasks waiting for slots. Only as many slots are
taken as the waiting jobs can use, and only on nodes they may run on, so a preempted task is not put back
on the slot it was taken from.
"""

from __future__ import annotations

from datetime import datetime
from functools import partial

from sqlalchemy import Connection

from kiln.core import task as task_rules
from kiln.core.job import JobState
from kiln.core.task import TaskState
from kiln.scheduler import priority
from kiln.scheduler.parts import SchedulerParts
from kiln.scheduler.state import ON_NODE, Effects, JobEntry
from kiln.store import rows as db


def preemptible(entry: JobEntry, below: int) -> bool:
    return (
        entry.row["state"] == JobState.ACTIVE
        and bool(entry.spec.get("allowTaskPreemption"))
        and entry.row["priority"] < below
    )


class Preemption(SchedulerParts):
    """Mixed into Scheduler; called at the end of a placement round, in its transaction."""

    def _preempt(self, conn: Connection, now: datetime, effects: Effects) -> None:
        """For each pool with a job that allows preemption: the first job in its line takes slots from the
        lower-priority ones. Pools without such a job cost nothing here."""
        for pool_key, members in self.state.preemptors.items():
            if (
                not members
                or (head := self.state.line_of(pool_key).peek(partial(self.state.line_key, pool_key=pool_key))) is None
            ):
                continue
            top = self.jobs[head[1]]
            victims = [
                job
                for key in members
                if (job := self.jobs.get(key)) is not None
                and job.row["pool_key"] == pool_key
                and preemptible(job, top.row["priority"])
            ]
            if victims:
                self._requeue_for(conn, top, victims, now, effects)

    def _requeue_for(
        self, conn: Connection, waiting: JobEntry, victims: list[JobEntry], now: datetime, effects: Effects
    ) -> None:
        """Take running tasks of the lowest-priority victims first, the latest started first, until the
        waiting job's queued tasks have slots (at most its maxParallelTasks allows)."""
        nodes = [
            n
            for n in self.nodes.values()
            if n.pool_key == waiting.row["pool_key"] and n.up and not n.draining and self._may_run(waiting, n)
        ]
        largest = max((n.capacity for n in nodes), default=0)
        fitting = [slots for _, slots in waiting.queue.heap if slots <= largest]  # the rest can never run
        limit = waiting.spec.get("maxParallelTasks", -1)
        if limit != -1:
            fitting = fitting[: priority.parallel_budget(limit, db.count_tasks_in_states(conn, waiting.key, ON_NODE))]
        need = sum(fitting)
        running = [t for e in victims for t in db.tasks_in_states(conn, (TaskState.RUNNING.value,), job_key=e.key)]
        order = {e.key: e.row["priority"] for e in victims}
        running.sort(key=lambda t: (order[t["job_key"]], -(t["start_time"].timestamp() if t["start_time"] else 0)))
        freed = 0
        for task in running:
            if freed >= need:
                break
            node = self.nodes.get(task["node_id"])
            if node not in nodes or node.exclusive or task["seq"] in self.instance_counts:
                continue
            self._take_off_node(conn, task, now, effects)
            changes = task_rules.transition(task, TaskState.ACTIVE, now, requeue=True)
            effects.change_task(task, changes)
            self.jobs[task["job_key"]].queue.push(task["seq"], task["required_slots"])
            freed += task["required_slots"]
        if freed:
            effects.wake = True
            effects.write_batched(conn)
