"""The control loop: places tasks on node slots, gates them on the job preparation task,
applies results, and ends jobs with their release tasks.

Decide, commit, act: every change is computed and stored in one transaction on the store's
writer thread (while the event loop holds `lock`, so in-memory state is touched by one party
at a time), then steps are sent, processes killed, and the loop woken.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from kiln.compute.protocol import ComputeBackend, Step, StepResult
from kiln.core import job as job_rules
from kiln.core import node as node_rules
from kiln.core import pool as pool_rules
from kiln.core import preparation as prep_rules
from kiln.core import task as task_rules
from kiln.core.job import JobState, TerminateReason
from kiln.core.node import NodeState
from kiln.core.pool import AllocationState, PoolState
from kiln.core.preparation import StepState
from kiln.core.retry import Decision, after_exit
from kiln.core.task import TaskState
from kiln.scheduler import steps as step_builder
from kiln.scheduler.slots import JobQueue, NodeSlots, choose_node
from kiln.scheduler.timers import Timers
from kiln.store import rows as db
from kiln.store.database import Database
from kiln.wire.times import duration_seconds
from kiln.wire.times import now as utcnow

log = logging.getLogger("kiln.scheduler")

#: Task states that hold a node's slots.
ON_NODE = (TaskState.PREPARING.value, TaskState.RUNNING.value)


@dataclass(frozen=True, slots=True)
class StepRef:
    """What a step in flight belongs to; results are matched on (step_id) and checked against `attempt`."""

    kind: str
    job_key: str
    node_id: str
    attempt: int
    seq: int | None = None
    slots: int = 0


@dataclass(slots=True)
class Effects:
    """What to do once a transaction has committed."""

    run: dict[str, list[Step]] = field(default_factory=lambda: defaultdict(list))
    kill: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    remove_dirs: list[tuple[str, str]] = field(default_factory=list)  #: (node_id, path)
    #: (node_id, path, when): directories to delete once their retention time has passed
    retain: list[tuple[str, str, datetime]] = field(default_factory=list)
    wake: bool = False
    check_jobs: set[str] = field(default_factory=set)  #: onAllTasksComplete candidates


@dataclass(slots=True)
class JobEntry:
    """The scheduler's view of a job that is not finished."""

    row: dict[str, Any]
    queue: JobQueue = field(default_factory=JobQueue)

    @property
    def key(self) -> str:
        return self.row["key"]

    @property
    def spec(self) -> dict[str, Any]:
        return self.row["spec"]


class Scheduler:
    def __init__(self, database: Database, backend: ComputeBackend, *, data_dir: Path,
                 account_name: str, account_url: str) -> None:
        self.db = database
        self.backend = backend
        self.data_dir = data_dir
        self.account_name = account_name
        self.account_url = account_url
        self.lock = asyncio.Lock()
        self.nodes: dict[str, NodeSlots] = {}
        self.pools: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, JobEntry] = {}
        self.preps: dict[tuple[str, str], dict[str, Any]] = {}
        self.waiting: dict[tuple[str, str], list[int]] = defaultdict(list)  #: tasks in `preparing` per record
        self.steps: dict[str, StepRef] = {}
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task | None = None
        self._side_tasks: set[asyncio.Task] = set()
        self.timers = Timers()
        backend.on_results = self._on_results
        backend.on_node_up = self._on_node_up
        backend.on_node_down = self._on_node_down

    # ------------------------------------------------------------------ start and stop
    async def start(self) -> None:
        """Rebuild memory from the store, requeue what was running when the server stopped, start nodes."""
        async with self.lock:
            await self.db.write(self._recover)
            for node in list(self.nodes.values()):
                await self.backend.add_node(node.node_id, node.root)
        self._loop_task = asyncio.create_task(self._run_loop(), name="kiln-scheduler")
        self.timers.start()
        for entry in self.jobs.values():
            self._arm_wall_clock(entry.row)
        await self._act(await self.db.read(self._pending_retention))
        self.wake()

    def _recover(self, conn: Connection) -> None:
        now = utcnow()
        for pool in db.find(conn, db.pools):
            self.pools[pool["key"]] = pool
        for node in db.find(conn, db.nodes):
            pool = self.pools.get(node["pool_key"])
            if pool is None or node["state"] == NodeState.LEAVING_POOL:
                db.remove(conn, db.nodes, id=node["id"])
                continue
            db.change(conn, db.nodes, {"id": node["id"]},
                      {"state": NodeState.STARTING.value, "state_transition_time": now})
            self.nodes[node["id"]] = NodeSlots(node["id"], node["pool_key"], pool["task_slots_per_node"],
                                               node["root_dir"], node["incarnation"])
        for task in db.tasks_in_states(conn, ON_NODE):  # they died with the server: requeue
            db.change(conn, db.tasks, {"seq": task["seq"]},
                      task_rules.transition(task, TaskState.ACTIVE, now), bump_etag=True)
        for job in db.find(conn, db.jobs, order_by=["seq"]):
            if job["state"] != JobState.COMPLETED:
                self.jobs[job["key"]] = JobEntry(job)
        for record in db.find(conn, db.preparations):
            for kind, rule in (("prep", prep_rules.prep), ("release", prep_rules.release)):
                if record[f"{kind}_state"] == StepState.RUNNING:
                    changes = rule(record, StepState.PENDING, now)
                    db.change(conn, db.preparations, _prep_key(record), changes)
                    record.update(changes)
            if record["job_key"] in self.jobs:
                self.preps[(record["job_key"], record["node_id"])] = record
        for task in db.tasks_in_states(conn, [TaskState.ACTIVE.value]):
            entry = self.jobs.get(task["job_key"])
            if entry is not None:
                entry.queue.push(task["seq"], task["required_slots"])

    async def close(self) -> None:
        await self.timers.close()
        if self._loop_task:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        for task in list(self._side_tasks):
            task.cancel()
        await asyncio.gather(*self._side_tasks, return_exceptions=True)

    # ------------------------------------------------------------------ the loop
    def wake(self) -> None:
        self._wake.set()

    async def _run_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                async with self.lock:
                    effects = await self.db.write(self._place)
                await self._act(effects)
            except Exception:  # keep scheduling; the store is the truth and the next round retries
                log.exception("placement round failed")
                await asyncio.sleep(0.5)
                self.wake()

    def _spawn(self, coro, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _act(self, effects: Effects) -> None:
        """Carry out committed decisions: kill first (release must not race the processes it cleans up)."""
        for node_id, step_ids in effects.kill.items():
            await self._safely(self.backend.kill(node_id, step_ids), f"kill on {node_id}")
        for node_id, batch in effects.run.items():
            await self._safely(self.backend.run(node_id, batch), f"dispatch to {node_id}")
        for node_id, path in effects.remove_dirs:
            self._spawn(self._safely(self.backend.delete_file(node_id, path, True), f"cleanup {path}"), "cleanup")
        for node_id, path, when in effects.retain:
            self.timers.schedule(f"retain:{node_id}:{path}", when, lambda n=node_id, p=path: self._safely(
                self.backend.delete_file(n, p, True), f"retention cleanup {p}"))
        for job_key in effects.check_jobs:
            await self._check_all_complete(job_key)
        if effects.wake:
            self.wake()

    async def _safely(self, coro, what: str) -> None:
        try:
            await coro
        except FileNotFoundError:
            pass
        except Exception as exc:  # a node that went away: its loss is handled by on_node_down
            log.warning("%s failed: %s", what, exc)

    # ------------------------------------------------------------------ placement
    def _place(self, conn: Connection) -> Effects:
        effects = Effects()
        now = utcnow()
        planned: list[tuple[JobEntry, int, int, NodeSlots]] = []
        by_pool: dict[str, list[JobEntry]] = defaultdict(list)
        for entry in self.jobs.values():
            if entry.row["state"] == JobState.ACTIVE and len(entry.queue):
                by_pool[entry.row["pool_key"]].append(entry)
        for pool_key, entries in by_pool.items():
            pool = self.pools.get(pool_key)
            if pool is None or pool["state"] != PoolState.ACTIVE:
                continue
            candidates = [n for n in self.nodes.values() if n.pool_key == pool_key and n.free > 0]
            fill = pool["spec"].get("taskSchedulingPolicy", {}).get("nodeFillType", "spread")
            for entry in sorted(entries, key=lambda e: (-e.row["priority"], e.row["seq"])):
                while len(entry.queue) and candidates:
                    seq, slots = entry.queue.peek()
                    node = choose_node(candidates, slots, fill, lambda n, e=entry: self._may_run(e, n))
                    if node is None:
                        break
                    entry.queue.pop()
                    node.used += slots
                    planned.append((entry, seq, slots, node))
                    candidates = [n for n in candidates if n.free > 0]
        if not planned:
            return effects
        rows = {r["seq"]: r for r in db.tasks_by_seq(conn, [seq for _, seq, _, _ in planned])}
        for entry, seq, slots, node in planned:
            task = rows.get(seq)
            if task is None or task["state"] != TaskState.ACTIVE:  # deleted or ended meanwhile
                node.used -= slots
                continue
            self._start_on_node(conn, entry, task, node, now, effects)
        return effects

    def _may_run(self, entry: JobEntry, node: NodeSlots) -> bool:
        record = self.preps.get((entry.key, node.node_id))
        return record is None or not prep_rules.excludes_node(record, node.incarnation)

    def _start_on_node(self, conn: Connection, entry: JobEntry, task: dict[str, Any], node: NodeSlots,
                       now: datetime, effects: Effects) -> None:
        prep_spec = entry.spec.get("jobPreparationTask")
        attempt = task["attempt"] + 1
        where = dict(pool_id=self.pools[node.pool_key]["id"], node_id=node.node_id, attempt=attempt)
        if prep_spec is not None:
            record = self._ensure_prep(conn, entry, node, now, effects)
            if not prep_rules.succeeded(record) and prep_spec["waitForSuccess"]:
                changes = task_rules.transition(task, TaskState.PREPARING, now, **where)
                db.change(conn, db.tasks, {"seq": task["seq"]}, changes, bump_etag=True)
                self.waiting[(entry.key, node.node_id)].append(task["seq"])
                return
        changes = task_rules.transition(task, TaskState.RUNNING, now, **where)
        db.change(conn, db.tasks, {"seq": task["seq"]}, changes, bump_etag=True)
        task.update(changes)
        self._dispatch_task(conn, entry, task, node, effects)

    def _dispatch_task(self, conn: Connection, entry: JobEntry, task: dict[str, Any], node: NodeSlots,
                       effects: Effects) -> None:
        step_id = f"t:{task['seq']}:{task['attempt']}"
        self.steps[step_id] = StepRef("task", entry.key, node.node_id, task["attempt"], task["seq"],
                                      task["required_slots"])
        conn.execute(db.nodes.update().where(db.nodes.c.id == node.node_id)
                     .values(total_tasks_run=db.nodes.c.total_tasks_run + 1))
        effects.run[node.node_id].append(step_builder.task_step(step_id, entry.row, task, self._placement(node)))

    def _placement(self, node: NodeSlots) -> step_builder.Placement:
        return step_builder.Placement(self.account_name, self.account_url, self.pools[node.pool_key]["id"],
                                      node.node_id, node.root)

    def _ensure_prep(self, conn: Connection, entry: JobEntry, node: NodeSlots, now: datetime,
                     effects: Effects) -> dict[str, Any]:
        """The first task of a job on a node claims the preparation record and starts prep."""
        key = (entry.key, node.node_id)
        record = self.preps.get(key)
        if record is None or record["incarnation"] != node.incarnation:
            fresh = prep_rules.new_record(entry.key, self.pools[node.pool_key]["id"], node.node_id, node.incarnation)
            if record is None:
                db.insert_rows(conn, db.preparations, [fresh])
            else:
                db.change(conn, db.preparations, _prep_key(record), fresh)
            record = self.preps[key] = fresh
        if record["prep_state"] == StepState.PENDING:
            self._run_prep(conn, entry, node, record, StepState.RUNNING, now, effects)
        return record

    def _run_prep(self, conn: Connection, entry: JobEntry, node: NodeSlots, record: dict[str, Any],
                  to: StepState, now: datetime, effects: Effects) -> None:
        attempt = record["prep_attempt"] + 1
        changes = prep_rules.prep(record, to, now, attempt=attempt)
        db.change(conn, db.preparations, _prep_key(record), changes)
        record.update(changes)
        step_id = f"p:{entry.key}:{node.node_id}:{attempt}"
        self.steps[step_id] = StepRef("prep", entry.key, node.node_id, attempt)
        effects.run[node.node_id].append(step_builder.prep_step(step_id, entry.row, self._placement(node)))

    # ------------------------------------------------------------------ results
    async def _on_results(self, node_id: str, results: list[StepResult]) -> None:
        async with self.lock:
            effects = await self.db.write(lambda conn: self._apply_results(conn, node_id, results))
        await self._act(effects)

    def _apply_results(self, conn: Connection, node_id: str, results: list[StepResult]) -> Effects:
        effects = Effects()
        now = utcnow()
        mine = [(r, self.steps.pop(r.step_id)) for r in results if r.step_id in self.steps]
        task_rows = {r["seq"]: r for r in db.tasks_by_seq(conn, [ref.seq for _, ref in mine if ref.kind == "task"])}
        for result, ref in mine:
            if ref.kind == "task":
                self._task_finished(conn, ref, task_rows.get(ref.seq), result, now, effects)
            elif ref.kind == "prep":
                self._prep_finished(conn, ref, result, now, effects)
            elif ref.kind == "release":
                self._release_finished(conn, ref, result, now, effects)
        return effects

    def _task_finished(self, conn: Connection, ref: StepRef, task: dict[str, Any] | None, result: StepResult,
                       now: datetime, effects: Effects) -> None:
        node = self.nodes.get(ref.node_id)
        if node is not None:
            node.used -= ref.slots
        effects.wake = True
        if task is None or task["state"] != TaskState.RUNNING or task["attempt"] != ref.attempt:
            return  # stale: the task was ended, requeued or deleted meanwhile
        failure = result.failure
        decision = after_exit(result.exit_code, retry_count=task["retry_count"], max_retries=task["max_retries"],
                              retriable=result.exit_code is not None)
        if decision is Decision.RETRY:
            changes = task_rules.transition(task, TaskState.ACTIVE, now, retry=True)
            self._requeue_in_memory(task)
        else:
            if failure is None and result.exit_code != 0:
                failure = task_rules.exit_failure(result.exit_code)
            changes = task_rules.transition(task, TaskState.COMPLETED, now, exit_code=result.exit_code,
                                            failure_info=failure)
            changes["start_time"] = task["start_time"]
            if (entry := self.jobs.get(ref.job_key)) is not None:
                self._retain_task(effects, entry.row, {**task, **changes})
            if failure is None:
                conn.execute(db.nodes.update().where(db.nodes.c.id == ref.node_id)
                             .values(total_tasks_succeeded=db.nodes.c.total_tasks_succeeded + 1))
            effects.check_jobs.add(ref.job_key)
        db.change(conn, db.tasks, {"seq": task["seq"]}, changes, bump_etag=True)

    def _requeue_in_memory(self, task: dict[str, Any]) -> None:
        entry = self.jobs.get(task["job_key"])
        if entry is not None:
            entry.queue.push(task["seq"], task["required_slots"])

    def _prep_finished(self, conn: Connection, ref: StepRef, result: StepResult, now: datetime,
                       effects: Effects) -> None:
        key = (ref.job_key, ref.node_id)
        record, entry, node = self.preps.get(key), self.jobs.get(ref.job_key), self.nodes.get(ref.node_id)
        if record is None or entry is None or node is None or record["prep_attempt"] != ref.attempt:
            return
        spec = entry.spec["jobPreparationTask"]
        ok = result.failure is None and result.exit_code == 0
        retriable = result.exit_code is not None or result.timed_out
        if not ok and retriable and after_exit(result.exit_code if result.exit_code is not None else 1,
                                               retry_count=record["prep_retry_count"],
                                               max_retries=spec["constraints"]["maxTaskRetryCount"]) is Decision.RETRY:
            self._run_prep(conn, entry, node, record, StepState.RUNNING, now, effects)
            return
        failure = None if ok else (result.failure or task_rules.exit_failure(result.exit_code))
        changes = prep_rules.prep(record, StepState.COMPLETED, now, exit_code=result.exit_code, failure_info=failure)
        db.change(conn, db.preparations, _prep_key(record), changes)
        record.update(changes)
        self._retain_job_step(effects, entry.row, record, "prep")
        waiting = self.waiting.pop(key, [])
        tasks = db.tasks_by_seq(conn, waiting)
        for task in tasks:
            if task["state"] != TaskState.PREPARING or task["node_id"] != ref.node_id:
                continue
            if ok:
                task.update(task_rules.transition(task, TaskState.RUNNING, now))
                db.change(conn, db.tasks, {"seq": task["seq"]}, task, bump_etag=True)
                self._dispatch_task(conn, entry, task, node, effects)
            else:  # back to the queue; this node is now excluded for the job
                node.used -= task["required_slots"]
                db.change(conn, db.tasks, {"seq": task["seq"]},
                          task_rules.transition(task, TaskState.ACTIVE, now), bump_etag=True)
                self._requeue_in_memory(task)
        effects.wake = True

    def _release_finished(self, conn: Connection, ref: StepRef, result: StepResult, now: datetime,
                          effects: Effects) -> None:
        record = self.preps.get((ref.job_key, ref.node_id))
        if record is None or record["release_attempt"] != ref.attempt:
            return
        failure = None if result.failure is None and result.exit_code == 0 else (
            result.failure or task_rules.exit_failure(result.exit_code))
        changes = prep_rules.release(record, StepState.COMPLETED, now, exit_code=result.exit_code,
                                     failure_info=failure)
        db.change(conn, db.preparations, _prep_key(record), changes)
        record.update(changes)
        if ref.job_key in self.jobs:
            self._retain_job_step(effects, self.jobs[ref.job_key].row, record, "release")
        self._finish_job_if_released(conn, ref.job_key, now, effects)

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
        db.change(conn, db.jobs, {"key": job_key}, changes, bump_etag=True)
        job.update(changes)
        if was is JobState.COMPLETED:  # nothing runs, release already ran: just remove
            self._remove_job(conn, job, effects)
            return effects
        entry = self.jobs.setdefault(job_key, JobEntry(job))
        entry.row = job
        entry.queue.clear()  # active tasks stay active and never run
        self._end_tasks_on_nodes(conn, job_key, now, effects, task_rules.ended_by("the job was ended."))
        if was is not JobState.TERMINATING:  # release already started by an earlier terminate
            self._start_releases(conn, entry, now, effects)
        self._finish_job_if_released(conn, job_key, now, effects)
        return effects

    def _end_tasks_on_nodes(self, conn: Connection, job_key: str, now: datetime, effects: Effects,
                            failure: dict[str, Any]) -> None:
        for step_id, ref in list(self.steps.items()):
            if ref.job_key == job_key and ref.kind in ("task", "prep"):
                del self.steps[step_id]
                effects.kill[ref.node_id].append(step_id)
                if ref.kind == "prep":
                    record = self.preps[(job_key, ref.node_id)]
                    changes = prep_rules.prep(record, StepState.COMPLETED, now, exit_code=None, failure_info=failure)
                    db.change(conn, db.preparations, _prep_key(record), changes)
                    record.update(changes)
        for task in db.tasks_in_states(conn, ON_NODE, job_key=job_key):
            node = self.nodes.get(task["node_id"])
            if node is not None:
                node.used -= task["required_slots"]
            changes = task_rules.transition(task, TaskState.COMPLETED, now, failure_info=failure)
            db.change(conn, db.tasks, {"seq": task["seq"]}, changes, bump_etag=True)
        for key in [k for k in self.waiting if k[0] == job_key]:
            del self.waiting[key]
        effects.wake = True

    def _start_releases(self, conn: Connection, entry: JobEntry, now: datetime, effects: Effects) -> None:
        if entry.spec.get("jobReleaseTask") is None:
            return
        for (job_key, node_id), record in self.preps.items():
            node = self.nodes.get(node_id)
            if job_key != entry.key or node is None or not prep_rules.needs_release(record, node.incarnation):
                continue
            if node.up:
                self._run_release(conn, entry, node, record, now, effects)

    def _run_release(self, conn: Connection, entry: JobEntry, node: NodeSlots, record: dict[str, Any],
                     now: datetime, effects: Effects) -> None:
        attempt = record["release_attempt"] + 1
        changes = prep_rules.release(record, StepState.RUNNING, now, attempt=attempt)
        db.change(conn, db.preparations, _prep_key(record), changes)
        record.update(changes)
        step_id = f"r:{entry.key}:{node.node_id}:{attempt}"
        self.steps[step_id] = StepRef("release", entry.key, node.node_id, attempt)
        effects.run[node.node_id].append(step_builder.release_step(step_id, entry.row, self._placement(node)))

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
        db.change(conn, db.jobs, {"key": job_key}, changes, bump_etag=True)
        del self.jobs[job_key]
        for key in [k for k in self.preps if k[0] == job_key]:
            del self.preps[key]

    def _remove_job(self, conn: Connection, job: dict[str, Any], effects: Effects) -> None:
        """Delete: rows go now, task directories on every node of the pool follow in the background."""
        db.delete_job_rows(conn, job["key"])
        self.jobs.pop(job["key"], None)
        for key in [k for k in self.preps if k[0] == job["key"]]:
            del self.preps[key]
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
        unfinished = await self.db.read(lambda conn: conn.execute(
            db.tasks.select().with_only_columns(db.tasks.c.seq)
            .where(db.tasks.c.job_key == job_key, db.tasks.c.state != TaskState.COMPLETED.value).limit(1)).first())
        if unfinished is None:
            try:
                await self.terminate_job(job_key, TerminateReason.ALL_TASKS_COMPLETE.value)
            except Exception as exc:  # already ending by another path
                log.debug("all-complete terminate skipped: %s", exc)

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
            if entry is not None and entry.row["state"] in (JobState.ACTIVE, JobState.DISABLED):
                await self.terminate_job(job["key"], TerminateReason.WALL_CLOCK.value)
        self.timers.schedule(key, job["creation_time"] + timedelta(seconds=seconds), expire)

    def _retain(self, effects: Effects, node_id: str | None, job_id: str, step_id: str,
                retention: str | None, ended: datetime | None) -> None:
        """A finished step's directory stays readable for its retentionTime, then goes."""
        seconds = duration_seconds(retention)
        if node_id and ended is not None and seconds is not None:
            effects.retain.append((node_id, step_builder.task_dir(job_id, step_id), ended + timedelta(seconds=seconds)))

    def _retain_task(self, effects: Effects, job: dict[str, Any], task: dict[str, Any]) -> None:
        self._retain(effects, task["node_id"], job["id"], task["id"], task["spec"]["constraints"].get("retentionTime"),
                     task.get("end_time"))

    def _retain_job_step(self, effects: Effects, job: dict[str, Any], record: dict[str, Any], kind: str) -> None:
        spec = job["spec"]["jobPreparationTask" if kind == "prep" else "jobReleaseTask"]
        retention = spec["constraints"].get("retentionTime") if kind == "prep" else spec.get("retentionTime")
        self._retain(effects, record["node_id"], job["id"], spec["id"], retention, record.get(f"{kind}_end_time"))

    def _pending_retention(self, conn: Connection) -> Effects:
        """After a restart: re-arm the cleanup of every finished step whose directory is still kept."""
        effects = Effects()
        jobs = {j["key"]: j for j in db.find(conn, db.jobs)}
        for task in db.tasks_in_states(conn, [TaskState.COMPLETED.value]):
            if task["job_key"] in jobs:
                self._retain_task(effects, jobs[task["job_key"]], task)
        for record in db.find(conn, db.preparations):
            job = jobs.get(record["job_key"])
            for kind in ("prep", "release"):
                if job is not None and record[f"{kind}_state"] == StepState.COMPLETED:
                    self._retain_job_step(effects, job, record, kind)
        return effects

    # ------------------------------------------------------------------ API-facing task operations
    def job_created(self, job: dict[str, Any]) -> None:
        self.jobs[job["key"]] = JobEntry(job)
        self._arm_wall_clock(job)
        self.wake()
        if job["spec"].get("onAllTasksComplete") == "terminatejob":
            self._spawn(self._check_all_complete(job["key"]), "all-complete")

    def job_updated(self, job: dict[str, Any]) -> None:
        entry = self.jobs.get(job["key"])
        if entry is not None:
            entry.row = job
            self._arm_wall_clock(job)
            self.wake()
            self._spawn(self._check_all_complete(job["key"]), "all-complete")

    def tasks_added(self, job_key: str, added: Iterable[tuple[int, int]]) -> None:
        entry = self.jobs.get(job_key)
        if entry is None:
            return
        for seq, slots in added:
            entry.queue.push(seq, slots)
        self.wake()

    async def end_task(self, job_key: str, task_key: str, *, delete: bool) -> None:
        """Terminate (completed, TaskEnded) or delete one task, killing its process if it runs."""
        async with self.lock:
            effects = await self.db.write(lambda conn: self._end_task(conn, job_key, task_key, delete))
        await self._act(effects)

    def _end_task(self, conn: Connection, job_key: str, task_key: str, delete: bool) -> Effects:
        from kiln.errors import NotFound
        effects = Effects()
        now = utcnow()
        task = db.get(conn, db.tasks, job_key=job_key, key=task_key)
        if task is None:
            raise NotFound("The specified task does not exist.", code="TaskNotFound")
        entry = self.jobs.get(job_key)
        if task["state"] in ON_NODE:
            node = self.nodes.get(task["node_id"])
            if node is not None:
                node.used -= task["required_slots"]
            step_id = f"t:{task['seq']}:{task['attempt']}"
            if self.steps.pop(step_id, None) is not None:
                effects.kill[task["node_id"]].append(step_id)
            waiting = self.waiting.get((job_key, task["node_id"]), [])
            if task["seq"] in waiting:
                waiting.remove(task["seq"])
            effects.wake = True
        if entry is not None:
            entry.queue.queued.discard(task["seq"])
            entry.queue.heap = [e for e in entry.queue.heap if e[0] != task["seq"]]
        if delete:
            db.remove(conn, db.tasks, seq=task["seq"])
            if task["node_id"] and entry is not None:
                effects.remove_dirs.append((task["node_id"], step_builder.task_dir(entry.row["id"], task["id"])))
        elif task["state"] != TaskState.COMPLETED:
            changes = task_rules.transition(task, TaskState.COMPLETED, now,
                                            failure_info=task_rules.ended_by("terminated by the user."),
                                            exit_code=None)
            db.change(conn, db.tasks, {"seq": task["seq"]}, changes, bump_etag=True)
            effects.check_jobs.add(job_key)
        return effects

    # ------------------------------------------------------------------ pools and nodes
    async def create_pool(self, pool: dict[str, Any]) -> None:
        """The pool row is stored by the caller's transaction; its first resize runs in the background."""
        async with self.lock:
            self.pools[pool["key"]] = pool
        self._spawn(self._resize(pool["key"], pool["target_dedicated_nodes"]), "resize")

    async def resize_pool(self, pool_key: str, target: int) -> None:
        """Enter `resizing` before answering (the SDK's poller waits for `steady`), then resize in the background."""
        async with self.lock:
            self.pools[pool_key] = await self.db.write(lambda conn: self._begin_resize(conn, pool_key, target))
        self._spawn(self._resize(pool_key, target), "resize")

    def _begin_resize(self, conn: Connection, pool_key: str, target: int) -> dict[str, Any]:
        from kiln.errors import NotFound
        pool = db.get(conn, db.pools, key=pool_key)
        if pool is None:
            raise NotFound("The specified pool does not exist.", code="PoolNotFound")
        changes = pool_rules.allocation(pool, AllocationState.RESIZING, utcnow())
        changes["target_dedicated_nodes"] = target
        db.change(conn, db.pools, {"key": pool_key}, changes, bump_etag=True)
        pool.update(changes)
        return pool

    async def _resize(self, pool_key: str, target: int) -> None:
        """Grow with new worker processes, or shrink by removing the least busy nodes (their tasks requeue)."""
        async with self.lock:
            pool = self.pools[pool_key]
            current = [n for n in self.nodes.values() if n.pool_key == pool_key]
            added = [self._new_node(pool) for _ in range(max(0, target - len(current)))]
            victims = sorted(current, key=lambda n: (n.used, n.node_id))[: max(0, len(current) - target)]
            await self.db.write(lambda conn: db.insert_rows(conn, db.nodes, [row for row, _ in added]))
            for row, slots in added:
                self.nodes[row["id"]] = slots
        for row, _ in added:
            await self.backend.add_node(row["id"], row["root_dir"])
            async with self.lock:
                await self.db.write(lambda conn, r=row: db.change(
                    conn, db.nodes, {"id": r["id"]}, node_rules.transition(r, NodeState.STARTING, utcnow())))
        for node in victims:
            await self._remove_node(node)
        async with self.lock:
            await self.db.write(lambda conn: self._maybe_steady(conn, pool_key))

    def _new_node(self, pool: dict[str, Any]) -> tuple[dict[str, Any], NodeSlots]:
        node_id = f"tvmps_{uuid.uuid4().hex[:24]}_d"
        root = self.data_dir / "nodes" / node_id
        now = utcnow()
        row = {"id": node_id, "pool_key": pool["key"], "state": NodeState.CREATING.value,
               "scheduling_state": "enabled", "state_transition_time": now, "allocation_time": now,
               "incarnation": 0, "root_dir": str(root), "total_tasks_run": 0, "total_tasks_succeeded": 0,
               "running_tasks": 0, "running_slots": 0}
        return row, NodeSlots(node_id, pool["key"], pool["task_slots_per_node"], str(root))

    async def _remove_node(self, node: NodeSlots) -> None:
        """Node leaves the pool: requeue its tasks, stop its worker, forget it (prep records stay listed).

        The worker is stopped outside the lock: the backend reports the loss, and that report takes the lock.
        """
        async with self.lock:
            effects = await self.db.write(lambda conn: self._lose_node(conn, node.node_id, remove=True))
            self.nodes.pop(node.node_id, None)
        await self.backend.remove_node(node.node_id)
        await self._act(effects)

    def _maybe_steady(self, conn: Connection, pool_key: str) -> None:
        pool = self.pools.get(pool_key)
        if pool is None or pool["allocation_state"] != AllocationState.RESIZING:
            return
        members = [n for n in self.nodes.values() if n.pool_key == pool_key]
        if len(members) == pool["target_dedicated_nodes"] and all(n.up for n in members):
            changes = pool_rules.allocation(pool, AllocationState.STEADY, utcnow())
            db.change(conn, db.pools, {"key": pool_key}, changes, bump_etag=True)
            pool.update(changes)

    async def delete_pool(self, pool_key: str) -> None:
        async with self.lock:
            def mark(conn: Connection) -> dict[str, Any]:
                from kiln.errors import NotFound
                pool = db.get(conn, db.pools, key=pool_key)
                if pool is None:
                    raise NotFound("The specified pool does not exist.", code="PoolNotFound")
                changes = pool_rules.delete(pool, utcnow())
                db.change(conn, db.pools, {"key": pool_key}, changes, bump_etag=True)
                return {**pool, **changes}
            self.pools[pool_key] = await self.db.write(mark)
        self._spawn(self._finish_pool_delete(pool_key), "pool-delete")

    async def _finish_pool_delete(self, pool_key: str) -> None:
        for node in [n for n in self.nodes.values() if n.pool_key == pool_key]:
            await self._remove_node(node)
        async with self.lock:
            await self.db.write(lambda conn: (db.remove(conn, db.pools, key=pool_key),
                                              db.remove(conn, db.nodes, pool_key=pool_key)))
            self.pools.pop(pool_key, None)

    # ------------------------------------------------------------------ node events
    async def _on_node_up(self, node_id: str) -> None:
        async with self.lock:
            node = self.nodes.get(node_id)
            if node is None:
                return
            effects = await self.db.write(lambda conn: self._node_up(conn, node))
        await self._act(effects)

    def _node_up(self, conn: Connection, node: NodeSlots) -> Effects:
        effects = Effects(wake=True)
        now = utcnow()
        row = db.get(conn, db.nodes, id=node.node_id)
        if row is None:
            return effects
        if row["state"] in (NodeState.CREATING, NodeState.REBOOTING, NodeState.REIMAGING):
            row.update(node_rules.transition(row, NodeState.STARTING, now))
        if row["state"] != NodeState.IDLE:
            db.change(conn, db.nodes, {"id": node.node_id}, node_rules.transition(row, NodeState.IDLE, now))
        node.up, node.used, node.draining = True, 0, False
        self._maybe_steady(conn, node.pool_key)
        for entry in list(self.jobs.values()):  # releases that waited for this node
            record = self.preps.get((entry.key, node.node_id))
            if (entry.row["state"] in (JobState.TERMINATING, JobState.DELETING) and record is not None
                    and entry.spec.get("jobReleaseTask") and prep_rules.needs_release(record, node.incarnation)):
                self._run_release(conn, entry, node, record, now, effects)
        return effects

    async def _on_node_down(self, node_id: str) -> None:
        async with self.lock:
            if node_id not in self.nodes:
                return
            effects = await self.db.write(lambda conn: self._lose_node(conn, node_id, remove=False))
        await self._act(effects)

    def _lose_node(self, conn: Connection, node_id: str, *, remove: bool) -> Effects:
        """The node's processes are gone: requeue its tasks, rerun an unfinished prep or release later."""
        effects = Effects(wake=True)
        now = utcnow()
        node = self.nodes[node_id]
        node.up, node.used = False, 0
        for step_id, ref in list(self.steps.items()):
            if ref.node_id == node_id:
                del self.steps[step_id]
        for task in db.tasks_in_states(conn, ON_NODE, node_id=node_id):
            db.change(conn, db.tasks, {"seq": task["seq"]}, task_rules.transition(task, TaskState.ACTIVE, now),
                      bump_etag=True)
            self._requeue_in_memory(task)
        for (job_key, nid), record in self.preps.items():
            if nid != node_id:
                continue
            self.waiting.pop((job_key, nid), None)
            for kind, rule in (("prep", prep_rules.prep), ("release", prep_rules.release)):
                if record[f"{kind}_state"] == StepState.RUNNING:
                    changes = rule(record, StepState.PENDING, now)
                    db.change(conn, db.preparations, _prep_key(record), changes)
                    record.update(changes)
        row = db.get(conn, db.nodes, id=node_id)
        if remove:
            db.remove(conn, db.nodes, id=node_id)
            for entry in list(self.jobs.values()):
                self._finish_job_if_released(conn, entry.key, now, effects)
        elif row is not None and row["state"] in (NodeState.IDLE, NodeState.RUNNING, NodeState.STARTING):
            db.change(conn, db.nodes, {"id": node_id}, node_rules.transition(row, NodeState.UNKNOWN, now))
        return effects

    # ------------------------------------------------------------------ reboot and reimage
    async def restart_node(self, node_id: str, option: str, *, reimage: bool) -> None:
        """Reboot or reimage: the node enters the transient state before the API answers (the SDK polls it)."""
        async with self.lock:
            effects = await self.db.write(lambda conn: self._begin_restart(conn, node_id, option, reimage))
        await self._act(effects)
        self._spawn(self._restart_when_drained(node_id, reimage), "restart-node")

    def _begin_restart(self, conn: Connection, node_id: str, option: str, reimage: bool) -> Effects:
        from kiln.errors import NotFound
        effects = Effects(wake=True)
        now = utcnow()
        row, node = db.get(conn, db.nodes, id=node_id), self.nodes.get(node_id)
        if row is None or node is None:
            raise NotFound("The specified compute node does not exist.", code="NodeNotFound")
        changes = node_rules.transition(row, NodeState.REIMAGING if reimage else NodeState.REBOOTING, now)
        db.change(conn, db.nodes, {"id": node_id}, changes)
        node.draining = True
        if reimage:
            node.incarnation = changes["incarnation"]  # prep records of the old incarnation no longer count
        else:
            for (job_key, nid), record in self.preps.items():
                entry = self.jobs.get(job_key)
                rerun = entry is not None and entry.spec["jobPreparationTask"]["rerunOnNodeRebootAfterSuccess"]
                if nid == node_id and prep_rules.reset_after_reboot(record, rerun) \
                        and record["prep_state"] == StepState.COMPLETED:
                    changes = prep_rules.prep(record, StepState.PENDING, now)
                    db.change(conn, db.preparations, _prep_key(record), changes)
                    record.update(changes)
        if option == "terminate":
            failure = task_rules.ended_by("the compute node was rebooted or reimaged.")
            for task in db.tasks_in_states(conn, ON_NODE, node_id=node_id):
                step_id = f"t:{task['seq']}:{task['attempt']}"
                if self.steps.pop(step_id, None) is not None:
                    effects.kill[node_id].append(step_id)
                node.used -= task["required_slots"]
                db.change(conn, db.tasks, {"seq": task["seq"]},
                          task_rules.transition(task, TaskState.COMPLETED, now, failure_info=failure), bump_etag=True)
                effects.check_jobs.add(task["job_key"])
        elif option == "requeue":
            node.used = 0  # the restart's node-down requeues whatever still runs
        return effects

    async def _restart_when_drained(self, node_id: str, reimage: bool) -> None:
        """taskcompletion/retaineddata: wait for running tasks to finish (no new ones start), then restart."""
        while (node := self.nodes.get(node_id)) is not None and node.used > 0 and node.draining:
            await asyncio.sleep(0.1)
        if node is not None:
            await self.backend.restart_node(node_id, wipe=reimage)

    # ------------------------------------------------------------------ read helpers for api/
    def node_running(self) -> dict[str, int]:
        """Slots in use per node, for node documents."""
        return {n.node_id: n.used for n in self.nodes.values()}


def _prep_key(record: dict[str, Any]) -> dict[str, str]:
    return {"job_key": record["job_key"], "node_id": record["node_id"]}
