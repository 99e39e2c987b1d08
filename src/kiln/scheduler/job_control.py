"""Job disable and enable, task reactivate, and task constraint updates that reach the scheduler."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from kiln import undo
from kiln.core import job as job_rules
from kiln.core import task as task_rules
from kiln.core.job import DisableTasks, JobState
from kiln.scheduler import steps as step_builder
from kiln.scheduler.parts import SchedulerParts
from kiln.scheduler.state import ON_NODE, Effects, JobEntry, task_step_id, transition
from kiln.store import kept_dirs
from kiln.store import rows as db
from kiln.wire.times import now as utcnow

#: Checks run on the stored row inside the write transaction (HTTP conditions); they raise to refuse.
Check = Callable[[dict[str, Any]], None]


def _no_check(_: dict[str, Any]) -> None:
    return None


class JobControl(SchedulerParts):
    """Mixed into Scheduler; uses its lock, store, backend and in-memory maps."""

    # ------------------------------------------------------------------ disable and enable
    async def disable_job(self, job_key: str, option: DisableTasks, check: Check = _no_check) -> None:
        """Enter `disabling` before answering (the SDK polls until the job leaves it)."""
        async with self.lock:
            effects = await self.db.write(lambda conn: self._disable_job(conn, job_key, option, check))
        await self._act(effects)

    def _disable_job(self, conn: Connection, job_key: str, option: DisableTasks, check: Check) -> Effects:
        effects = Effects(wake=True)
        now = utcnow()
        job = self._load_job(conn, job_key)
        check(job)
        job_rules.check_disable(job["state"])
        if job["state"] == JobState.ACTIVE:
            self._change_job(conn, job, job_rules.transition(job, JobState.DISABLING, now))
        entry = self._entry(job)
        if job["state"] == JobState.DISABLED:
            return effects  # nothing runs: disabling again changes nothing
        if option is DisableTasks.WAIT:  # no task of it may start from now on; those started run on
            for node in self.nodes.values():
                self.state.withdraw(
                    node.node_id, [i for i, (owner, _, _) in node.ahead.items() if owner == job_key], effects
                )
        else:
            self._call_back_job(conn, job_key, effects, requeue=True)
            self._off_nodes(conn, entry, option, now, effects)
        self._settle_disabling(conn, [job_key], now)
        return effects

    def _off_nodes(
        self, conn: Connection, entry: JobEntry, option: DisableTasks, now: datetime, effects: Effects
    ) -> None:
        """requeue: back to active (requeueCount + 1, not a retry); terminate: completed with TaskEnded."""
        on_node = db.tasks_in_states(conn, ON_NODE, job_key=entry.key)
        for task in on_node:
            self._end_instances(conn, task["seq"], now, effects)
        self.state.job_disabled(entry, on_node, option is DisableTasks.REQUEUE, now, effects)
        effects.write_batched(conn)

    def _settle_disabling(self, conn: Connection, job_keys: Iterable[str], now: datetime) -> None:
        """A disabling job becomes disabled once none of its tasks holds a node (disableTasks=wait waits here)."""
        for job_key in job_keys:
            entry = self.jobs.get(job_key)
            if entry is None or entry.row["state"] != JobState.DISABLING:
                continue
            if db.tasks_in_states(conn, ON_NODE, job_key=job_key) or self._asked_back(job_key):
                continue
            self._change_job(conn, entry.row, job_rules.transition(entry.row, JobState.DISABLED, now))

    def _asked_back(self, job_key: str) -> bool:
        """A task of the job sent ahead is being asked back, or has started unseen: it may still run."""
        return any(node.ahead[i][0] == job_key for node in self.nodes.values() for i in node.withdrawing)

    def _disabling_jobs(self) -> list[str]:
        return [
            key
            for key in sorted(self.state.disabling)
            if (entry := self.jobs.get(key)) is not None and entry.row["state"] == JobState.DISABLING
        ]

    async def enable_job(self, job_key: str, check: Check = _no_check) -> None:
        """disabled -> enabling -> active in one step: Kiln has nothing to wait for before scheduling resumes."""
        async with self.lock:
            await self.db.write(lambda conn: self._enable_job(conn, job_key, check))
        self.wake()
        self._spawn(self._check_all_complete(job_key), "all-complete")

    def _enable_job(self, conn: Connection, job_key: str, check: Check) -> None:
        now = utcnow()
        job = self._load_job(conn, job_key)
        check(job)
        job_rules.check_enable(job["state"])
        self._change_job(conn, job, job_rules.transition(job, JobState.ENABLING, now))
        self._change_job(conn, job, job_rules.transition(job, JobState.ACTIVE, now))
        self._entry(job)

    # ------------------------------------------------------------------ tasks
    async def reactivate_task(self, job_key: str, task_key: str, check: Check = _no_check) -> None:
        async with self.lock:
            await self.db.write(lambda conn: self._reactivate_task(conn, job_key, task_key, check))
        self.wake()

    def _reactivate_task(self, conn: Connection, job_key: str, task_key: str, check: Check) -> None:
        from kiln.errors import NotFound

        now = utcnow()
        job = self._load_job(conn, job_key)
        task = db.get(conn, db.tasks, job_key=job_key, key=task_key)
        if task is None:
            raise NotFound("The specified task does not exist.", code="TaskNotFound")
        check(task)
        job_rules.check_open(job["state"])
        changes = task_rules.reactivate(task, now)
        transition(conn, db.tasks, {"seq": task["seq"]}, task, changes, bump_etag=True)
        if task["node_id"]:  # the old directory is reused by the next run: no retention cleanup under it
            kept_dirs.release(conn, task["node_id"], step_builder.task_dir(job["id"], task["id"]))
        self._entry(job).queue.push(task["seq"], task["required_slots"])

    def task_row_changed(self, task: dict[str, Any]) -> None:
        """After a task's spec changed: a running task's kept row is stale now, so its result reads the whole
        row again (a result applied before this call was decided under the old spec, as if it came first)."""
        for step_id in (task_step_id(task["seq"], task["attempt"]), task_step_id(task["seq"], task["attempt"] + 1)):
            self.state.kept_row_dropped(step_id)  # running, or sent ahead

    # ------------------------------------------------------------------ helpers
    def _load_job(self, conn: Connection, job_key: str) -> dict[str, Any]:
        from kiln.errors import NotFound

        job = db.get(conn, db.jobs, key=job_key)
        if job is None:
            raise NotFound("The specified job does not exist.", code="JobNotFound")
        return job

    def _change_job(self, conn: Connection, job: dict[str, Any], changes: dict[str, Any]) -> None:
        transition(conn, db.jobs, {"key": job["key"]}, job, changes, bump_etag=True)
        undo.update(job, changes)

    def _entry(self, job: dict[str, Any]) -> JobEntry:
        return self.state.job_tracked(job)
