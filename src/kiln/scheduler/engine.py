"""The control loop: places tasks on node slots, gates them on the job preparation task,
applies results, and ends jobs with their release tasks.

Decide, commit, act: every change is computed and stored in one transaction by the store's writer
(while the event loop holds `lock`, so in-memory state is touched by one party at a time), then
steps are sent, processes killed, and the loop woken.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

import kiln.scheduler.statistics as task_statistics
from kiln import story
from kiln.compute.auto_storage import AutoStorage
from kiln.compute.protocol import AppPackage, ComputeBackend, StepResult
from kiln.core import preparation as prep_rules
from kiln.core import task as task_rules
from kiln.core.dependencies import DependencyGraph
from kiln.core.node import NodeState, is_dedicated
from kiln.core.pool import PoolState
from kiln.core.preparation import StepState
from kiln.core.task import TaskState
from kiln.scheduler import packages, transfers
from kiln.scheduler import steps as step_builder
from kiln.scheduler.ahead import SendAhead
from kiln.scheduler.auto_pools import AutoPools
from kiln.scheduler.autoscale import Autoscaling
from kiln.scheduler.control import CHECK_ENV, ControlState
from kiln.scheduler.faults import PendingFaults
from kiln.scheduler.job_control import JobControl
from kiln.scheduler.job_end import JobEnding
from kiln.scheduler.job_manager import JobManagement
from kiln.scheduler.multi_instance import MultiInstance
from kiln.scheduler.node_control import NodeControl
from kiln.scheduler.node_ops import NodeOperations
from kiln.scheduler.outcomes import TaskOutcomes
from kiln.scheduler.preemption import Preemption
from kiln.scheduler.retention import Retention
from kiln.scheduler.schedules import JobSchedules
from kiln.scheduler.slots import NodeSlots
from kiln.scheduler.start_tasks import StartTasks
from kiln.scheduler.state import (
    ON_NODE,
    Effects,
    JobEntry,
    StepRef,
    change_record,
    requeue,
    transition,
)
from kiln.scheduler.timers import Timers
from kiln.store import kept_dirs, live
from kiln.store import rows as db
from kiln.store.database import Database
from kiln.store.packages import PackageStore
from kiln.wire.times import now as utcnow

log = logging.getLogger("kiln.scheduler")

#: How long after a failed store transaction (a full disk, say) placement or results are tried again.
RETRY_DELAY = 0.5
#: Active tasks read per store read while the queues fill after a restart (store.live.queued): each part is
#: pushed on the event loop in one go (~10 ms), and requests are served between parts.
FILL_PART = 20_000


class Scheduler(
    JobEnding,
    JobControl,
    JobManagement,
    Retention,
    NodeOperations,
    TaskOutcomes,
    AutoPools,
    JobSchedules,
    MultiInstance,
    Preemption,
    SendAhead,
    Autoscaling,
    StartTasks,
    NodeControl,
):
    def __init__(
        self, database: Database, backend: ComputeBackend, *, data_dir: Path, account_name: str, account_url: str
    ) -> None:
        self.db = database
        self.backend = backend
        self.data_dir = data_dir
        self.package_store = PackageStore(data_dir / "applications")
        #: the pool's application packages as they were when each node last joined, rebooted or was reimaged
        self.node_packages: dict[str, tuple[AppPackage, ...]] = {}
        self.account_name = account_name
        self.account_url = account_url
        #: the linked storage account of autoStorageContainerName resource files; set by the server
        self.auto_storage: AutoStorage | None = None
        self.lock = asyncio.Lock()
        self.schedule_lock = asyncio.Lock()  #: serializes job schedule evaluations (taken before `lock`, never inside)
        # what memory keeps is in one object, tracked: a store transaction that fails undoes its changes (kiln.undo)
        self.state = state = ControlState()
        self.nodes, self.pools, self.jobs, self.preps = state.nodes, state.pools, state.jobs, state.preps
        self.waiting, self.steps = state.waiting, state.steps
        if os.environ.get(CHECK_ENV):
            database.before_commit = state.check
        self.faults = PendingFaults(self)  #: faults on demand waiting for their moment
        self._results_inbox: list[StepResult] = []
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task | None = None
        self._side_tasks: set[asyncio.Task] = set()
        self.timers = Timers()
        self._sweep_due: datetime | None = None  #: when the retention sweep is set to run (retention.py)
        #: jobs with dependencies whose graphs a restart has yet to rebuild (`_fill_queues`); their adds wait
        self._graphs_pending: set[str] = set()
        self._graphs_built = asyncio.Event()
        self._init_multi_instance(state)
        self._init_autoscale()
        backend.on_results = self._on_results
        backend.on_node_up = story.stimulated("node {} up", self._node_joined)
        backend.on_node_down = story.stimulated("node {} lost", self._on_node_down)
        backend.on_node_failed = self._on_node_failed

    async def _node_joined(self, node_id: str) -> None:
        """A node is up (new, rebooted, reimaged, or back after a restart): it keeps the pool's packages of now
        until it next does so, as Azure deploys a pool's packages only then."""
        node = self.nodes.get(node_id)
        if node is not None and node.pool_key in self.pools:
            spec = self.pools[node.pool_key]["spec"]
            self.node_packages[node_id] = packages.pool_packages(self.package_store, spec)
        await self._on_node_up(node_id)

    # ------------------------------------------------------------------ start and stop
    async def start(self) -> None:
        """Rebuild memory from the store's live rows, requeue what was running when the server stopped, start
        nodes. The queues of active tasks fill behind the open port (`_fill_queues`), holding the lock."""
        async with self.lock:
            with story.caused_by("recovery"):
                await self.db.write(self._recover)
            for node in list(self.nodes.values()):
                await self.backend.add_node(node.node_id, node.root)
        self._loop_task = asyncio.create_task(self._run_loop(), name="kiln-scheduler")
        self.timers.start()
        for entry in self.jobs.values():
            self._arm_wall_clock(entry.row)
        await self.recover_auto_pools()
        await self.recover_schedules()
        await self.recover_autoscale()
        await self.lock.acquire()  # taken here, so that nothing that needs the queues comes before the fill
        self._spawn(self._fill_queues(), "recovery")

    def _recover(self, conn: Connection) -> None:
        """What must hold before the port opens, from live rows read by index (store.live): pools, nodes,
        unfinished jobs, their tasks that died on nodes (requeued), their preparation records."""
        now = utcnow()
        for row in db.find(conn, db.pools):
            self.state.pool_tracked(row)
        for node in db.find(conn, db.nodes):
            pool = self.pools.get(node["pool_key"])
            if pool is None or node["state"] == NodeState.LEAVING_POOL:
                db.remove_node(conn, node["id"])
                continue
            transition(
                conn,
                db.nodes,
                {"id": node["id"]},
                node,
                {"state": NodeState.STARTING.value, "state_transition_time": now},
            )
            self.state.node_tracked(
                NodeSlots(
                    node["id"], node["pool_key"], pool["task_slots_per_node"], node["root_dir"], node["incarnation"]
                )
            )
        for job in live.unfinished_jobs(conn):
            self.state.job_tracked(job)
        for task in live.tasks_in_states(conn, self.jobs, ON_NODE):  # they died with the server
            requeue(conn, task, now)
        self._count_unseen_runs(conn, now)  # memory knows the nodes and unfinished jobs now
        for record in live.records_of(conn, self.jobs):
            for kind, rule in (("prep", prep_rules.prep), ("release", prep_rules.release)):
                if record[f"{kind}_state"] == StepState.RUNNING:
                    changes = rule(record, StepState.PENDING, now)
                    change_record(conn, record, changes)
            self.state.record_tracked(record)
        self._graphs_pending.update(key for key, entry in self.jobs.items() if entry.graph is not None)
        self._recover_instances(conn)
        self._settle_disabling(conn, self._disabling_jobs(), now)  # their running tasks were just requeued

    async def _fill_queues(self) -> None:
        """After a restart, behind the open port: each unfinished job's active tasks join its queue, a part at
        a time read through an index as (seq, slots) only. Holds the lock `start` took, so placement and every
        request that changes the control state wait for full queues; reads do not, nor do task adds (an add
        queues its own tasks, and a task queued twice is queued once). Jobs with dependencies first: their
        adds wait for their graphs (`dependencies_known`). Then the retention sweep waits for the first
        directory due."""
        try:
            for job_key in sorted(self._graphs_pending):
                while job_key in self._graphs_pending:
                    try:
                        await self._rebuild_dependencies(job_key)
                        self._graphs_pending.discard(job_key)
                    except Exception:  # without its graph the job's tasks would never be queued: try again
                        log.exception("rebuilding the dependency graph of job %s failed", job_key)
                        self.jobs[job_key].graph = DependencyGraph()
                        await asyncio.sleep(RETRY_DELAY)
            self._graphs_built.set()
            for job_key in [key for key, entry in self.jobs.items() if entry.graph is None]:
                after = -1
                while (part := await self._queued_part(job_key, after)) and (entry := self.jobs.get(job_key)):
                    entry.queue_active(part)
                    after = part[-1][0]
        finally:
            self.lock.release()
        self.wake()
        self._sweep_by(await self.db.read(kept_dirs.next_due))

    async def _queued_part(self, job_key: str, after_seq: int) -> list[tuple[int, int]]:
        """The next FILL_PART of the job's active tasks; a failed read is tried again (a restart without its
        queues would strand every active task)."""
        while True:
            try:
                return await self.db.read(lambda conn: live.queued(conn, job_key, after_seq, count=FILL_PART))
            except Exception:
                log.exception("reading the queue of job %s failed", job_key)
                await asyncio.sleep(RETRY_DELAY)

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
        story.stimulus.set("placement")  # this task's own context: what its rounds change, placement did
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                async with self.lock:
                    effects = await self.db.write(self._place)
                await self._act(effects)
            except Exception:  # keep scheduling; the store is the truth and the next round retries
                log.exception("placement round failed")
                await asyncio.sleep(RETRY_DELAY)
                self.wake()

    def _spawn(self, coro, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _act(self, effects: Effects) -> None:
        """Carry out committed decisions: kill first (release must not race the processes it cleans up)."""
        for node_id, step_ids in effects.kill.items():
            await self._safely(self.backend.kill(node_id, step_ids), f"kill on {node_id}")
        for node_id, step_ids in effects.withdraw.items():
            self._spawn(self._withdraw_from(node_id, step_ids), "withdraw")
        for node_id, batch in effects.run.items():
            await self._safely(self.faults.dispatch(node_id, batch), f"dispatch to {node_id}")
        for node_id, path in effects.remove_dirs:
            self._spawn(self._safely(self.backend.delete_file(node_id, path, True), f"cleanup {path}"), "cleanup")
        if effects.retain:  # decided after its transaction (none is left by those that write records)
            await self.db.write(effects.write_records)
        if effects.kept:
            self._sweep_by(min(effects.kept))
        for job_key in effects.check_jobs:
            await self._check_job_manager(job_key)
            await self._check_all_complete(job_key)
        for job in effects.ended_jobs:
            await self._job_ended(job)
        if effects.wake:
            self.wake()

    async def _job_ended(self, job: dict[str, Any]) -> None:
        """A job completed or was removed: its auto pool and its schedule move on."""
        await self._job_pool_ended(job)
        await self._schedule_job_ended(job)

    async def _safely(self, coro, what: str) -> None:
        try:
            await coro
        except FileNotFoundError:
            pass
        except Exception as exc:  # a node that went away: its loss is handled by on_node_down
            log.warning("%s failed: %s", what, exc)

    # ------------------------------------------------------------------ placement
    def _place(self, conn: Connection, counters: Counter | None = None) -> Effects:
        """counters: node counters of the caller's transaction, written with this round's (one statement)."""
        effects = Effects()
        if counters:
            effects.node_counters.update(counters)
            counters.clear()
        now = utcnow()
        for node in self.nodes.values():
            if node.ahead_stranded:  # queued again, so that a round places them
                self.state.withdraw(node.node_id, list(node.ahead), effects)
        self._call_back_to_idle_slots(conn, effects)
        planned: list[tuple[JobEntry, int, int, NodeSlots]] = []
        wanting = [key for key, line in self.state.lines.items() if len(line)]  # a pool's line lists its jobs
        for pool_key in wanting:
            pool = self.pools.get(pool_key)
            if pool is None or pool["state"] != PoolState.ACTIVE:
                continue
            candidates = [n for n in self.nodes.values() if n.pool_key == pool_key and n.free > 0]
            if candidates:
                planned += self._plan_pool(conn, pool, candidates)
        rows = {r["seq"]: r for r in db.tasks_by_seq(conn, [seq for _, seq, _, _ in planned])}
        for entry, seq, slots, node in planned:
            task = rows.get(seq)
            if task is None or task["state"] != TaskState.ACTIVE:  # deleted or ended meanwhile
                node.release(seq)
                self.state.instance_plan_dropped(seq)
                continue
            if self._start_multi_instance(conn, entry, task, node, slots, now, effects):
                continue
            node = self._prefer_affinity(entry, task, node, slots)
            self._start_on_node(conn, entry, task, node, now, effects)
        for pool_key in wanting:
            pool = self.pools.get(pool_key)
            if pool is not None and pool["state"] == PoolState.ACTIVE:
                self._send_ahead(conn, pool_key, effects)
        effects.write_batched(conn)
        self._preempt(conn, now, effects)
        return effects

    def _may_run(self, entry: JobEntry, node: NodeSlots) -> bool:
        record = self.preps.get((entry.key, node.node_id))
        return record is None or not prep_rules.excludes_node(record, node.incarnation)

    def _start_on_node(
        self, conn: Connection, entry: JobEntry, task: dict[str, Any], node: NodeSlots, now: datetime, effects: Effects
    ) -> None:
        self.state.start_task(entry, task, node, self.pools[node.pool_key]["id"], now, effects)
        self._carry_out(conn, effects, now)

    def _carry_out(self, conn: Connection, effects: Effects, now: datetime) -> None:
        """What the control state decided, made in this transaction right after the decision: its record writes
        (in order, before anything else reads them), and its steps built for their nodes."""
        effects.write_records(conn)
        for order in effects.dispatch:
            entry, node = self.jobs[order.job_key], self.nodes[order.node_id]
            if order.kind == "task":
                assert order.task is not None, "a task step carries its task's row"
                step = step_builder.task_step(
                    order.step_id, entry.row, order.task, self._placement(node), slots=order.task["required_slots"]
                )
            elif order.kind == "release":
                step = step_builder.release_step(order.step_id, entry.row, self._placement(node))
            else:
                step = self.faults.prep_step(
                    step_builder.prep_step(order.step_id, entry.row, self._placement(node)),
                    entry.key,
                    node.node_id,
                    now,
                )
            effects.run[node.node_id].append(step)
        effects.dispatch.clear()

    def _placement(self, node: NodeSlots) -> step_builder.Placement:
        pool = self.pools[node.pool_key]
        return step_builder.Placement(
            self.account_name,
            self.account_url,
            pool["id"],
            node.node_id,
            node.root,
            tuple(pool["spec"].get("userAccounts") or ()),
            self.job_tokens,
            self.auto_storage,
            packages=self.node_packages.get(node.node_id, ()),
            task_packages=functools.partial(packages.task_packages, self.package_store),
            dedicated=is_dedicated(node.node_id),
        )

    def _ensure_prep(
        self, conn: Connection, entry: JobEntry, node: NodeSlots, now: datetime, effects: Effects
    ) -> dict[str, Any]:
        record = self.state.ensure_preparation(entry, node, self.pools[node.pool_key]["id"], now, effects)
        self._carry_out(conn, effects, now)
        return record

    # ------------------------------------------------------------------ results
    async def _on_results(self, node_id: str, results: list[StepResult]) -> None:
        """Group commit: results that arrive while a transaction runs are applied together by the next
        caller to get the lock, so under load one transaction carries every node's results. A caller
        whose results an earlier one applied returns once they are committed (the node may forget them).
        One turn of the loop first: a host's reply brings each of its nodes' results by a call of its own."""
        self._results_inbox.extend(results)
        await asyncio.sleep(0)
        async with self.lock:
            batch, self._results_inbox = self._results_inbox, []
            if not batch:
                return
            reporting = sorted({ref.node_id for r in batch if (ref := self.steps.get(r.step_id)) is not None})
            try:
                with story.caused_by(f"node {','.join(reporting)} report"):
                    effects = await self.db.write(lambda conn: self._apply_results(conn, batch))
            except Exception:  # memory is as it was (kiln.undo) and the nodes forgot them: keep them, try again
                self._results_inbox[:0] = batch
                self._spawn(self._safely(self._results_again(), "applying results again"), "results-again")
                raise
        with story.caused_by(f"node {','.join(reporting)} report"):
            await self._act(effects)

    async def _results_again(self) -> None:
        await asyncio.sleep(RETRY_DELAY)
        await self._on_results("", [])

    def _apply_results(self, conn: Connection, results: list[StepResult]) -> Effects:
        effects = Effects()
        now = utcnow()
        mine: list[tuple[StepResult, StepRef]] = []  # ended steps (the rest are notices of steps sent ahead)
        ahead: list[tuple[StepResult, StepRef]] = []  # steps sent ahead that started (notice or result)
        for result in results:
            ref = self.steps.get(result.step_id)
            if ref is None:
                continue
            if ref.ahead:
                ahead.append((result, ref))
            if not result.running:
                mine.append((result, ref))
                self.state.step_ended(result.step_id)
        started = self._ahead_started(conn, ahead, now, effects)
        mine = [(result, ref) for result, ref in mine if not ref.ahead or ref.seq in started]
        transfers.record(conn, mine, self.jobs, now)
        task_rows = self._finished_task_rows(conn, [ref for _, ref in mine if ref.kind == "task" and not ref.ahead])
        task_rows.update(started)
        for result, ref in mine:
            if ref.kind == "task":
                assert ref.seq is not None, "task steps carry their task's seq"
                self._task_finished(conn, ref, task_rows.get(ref.seq), result, now, effects)
            elif ref.kind == "prep":
                self._prep_finished(conn, ref, result, now, effects)
            elif ref.kind == "release":
                self._release_finished(conn, ref, result, now, effects)
            elif ref.kind == "coord":
                self._coordination_finished(conn, ref, result, now, effects)
            elif ref.kind in ("start", "deploy"):  # a node coming up: its pool's packages, its start task
                self._start_task_finished(conn, ref, result, now, effects)
        task_statistics.record(conn, mine, task_rows, effects.task_changes, self.jobs, now)
        effects.write_batched(conn, counters=False)
        self._settle_disabling(conn, {ref.job_key for _, ref in mine}, now)
        self._take_job_actions(conn, effects)
        effects.merge(self._place(conn, effects.node_counters))  # refill the freed slots in the same transaction
        return effects

    @staticmethod
    def _finished_task_rows(conn: Connection, refs: list[StepRef]) -> dict[int, dict[str, Any]]:
        """Rows of tasks whose steps ended: the dispatched row brought up to date with what can change
        while a task runs (one narrow read, no JSON to decode), or the whole row where none was kept."""
        seqs = [(ref.seq, ref.row) for ref in refs if ref.seq is not None]  # every task step has one
        kept = {seq: row for seq, row in seqs if row is not None}
        rows = {r["seq"]: {**kept[r["seq"]], **r} for r in db.tasks_by_seq(conn, list(kept), db.RUNNING_COLUMNS)}
        rows.update((r["seq"], r) for r in db.tasks_by_seq(conn, [seq for seq, row in seqs if row is None]))
        return rows

    def _task_finished(
        self,
        conn: Connection,
        ref: StepRef,
        task: dict[str, Any] | None,
        result: StepResult,
        now: datetime,
        effects: Effects,
    ) -> None:
        # its slots are refilled by the placement that ends every results transaction
        if self.state.task_ended(ref, task, result, now, effects):
            assert ref.seq is not None, "a task step belongs to a task"
            self._complete_subtasks(conn, ref.seq, now)

    def _requeue_in_memory(self, task: dict[str, Any]) -> None:
        self.state.tasks_queued(task["job_key"], [(task["seq"], task["required_slots"])])

    def _take_off_node(self, conn: Connection, task: dict[str, Any], now: datetime, effects: Effects) -> None:
        """The one way a task that holds a node (preparing or running) leaves it, whatever comes next for it:
        its slots are freed, its process killed, it waits for no preparation task, and its other instances end."""
        self.state.task_off_node(task["job_key"], task["node_id"], task["seq"], task["attempt"], effects)
        self._end_instances(conn, task["seq"], now, effects)

    def _end_on_node(
        self, conn: Connection, task: dict[str, Any], failure: dict[str, Any], now: datetime, effects: Effects
    ) -> None:
        """A task that holds a node is ended there (its job ends, its node is rebooted with terminate): it
        completes with `failure` and its job is checked for onAllTasksComplete."""
        self._take_off_node(conn, task, now, effects)
        changes = task_rules.transition(task, TaskState.COMPLETED, now, failure_info=failure)
        transition(conn, db.tasks, {"seq": task["seq"]}, task, changes, bump_etag=True)
        effects.check_jobs.add(task["job_key"])

    def _prep_finished(
        self, conn: Connection, ref: StepRef, result: StepResult, now: datetime, effects: Effects
    ) -> None:
        waiters = db.tasks_by_seq(conn, self.state.preparation_waiters(ref.job_key, ref.node_id))
        ok = self.state.preparation_finished(ref, result, waiters, now, effects)
        self._carry_out(conn, effects, now)
        if ok is not None:
            entry, record = self.jobs[ref.job_key], self.preps[(ref.job_key, ref.node_id)]
            self._retain_job_step(effects, entry.row, record, "prep")
            self._instances_prepared(conn, ref.job_key, ref.node_id, ok, now, effects)

    def _release_finished(
        self, conn: Connection, ref: StepRef, result: StepResult, now: datetime, effects: Effects
    ) -> None:
        record = self.state.release_finished(ref, result, now, effects)
        self._carry_out(conn, effects, now)
        if record is None:
            return
        if ref.job_key in self.jobs:
            self._retain_job_step(effects, self.jobs[ref.job_key].row, record, "release")
        self._finish_job_if_released(conn, ref.job_key, now, effects)

    # ------------------------------------------------------------------ API-facing task operations
    def job_created(self, job: dict[str, Any], manager: dict[str, Any] | None = None) -> None:
        """A job was inserted (see `rows.add_job`): track it and queue its job manager task, if any."""
        self.state.job_tracked(job)
        if manager is not None:
            self.tasks_added(job["key"], [(manager["seq"], manager["required_slots"])])
        self._arm_wall_clock(job)
        self.wake()
        if job["spec"].get("onAllTasksComplete") == "terminatejob":
            self._spawn(self._check_all_complete(job["key"]), "all-complete")

    def job_updated(self, job: dict[str, Any]) -> None:
        entry = self.jobs.get(job["key"])
        if entry is not None:
            entry.row = job
            self.state.job_changed(entry)
            self._arm_wall_clock(job)
            self.wake()
            self._spawn(self._check_all_complete(job["key"]), "all-complete")

    async def dependencies_known(self, job_key: str) -> None:
        """A task add to a job with dependencies waits until a restart has rebuilt the job's graph."""
        if job_key in self._graphs_pending:
            await self._graphs_built.wait()

    def tasks_added(self, job_key: str, added: Iterable[tuple[int, int]]) -> None:
        if self.state.tasks_added(job_key, list(added)):
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
        taken_back = self.state.task_stopped(task, delete, now, effects)
        if taken_back is not None:
            self._move_attempts_on(conn, [taken_back])
        if task["state"] in ON_NODE:
            self._end_instances(conn, task["seq"], now, effects)
        effects.write_batched(conn, counters=False)
        if delete:
            db.delete_task(conn, task["seq"])
            self._forget_instances(conn, task, entry, effects)
            if entry is not None:
                path = step_builder.task_dir(entry.row["id"], task["id"])
                kept_dirs.forget(conn, job_key, path)
                if task["node_id"]:
                    effects.remove_dirs.append((task["node_id"], path))
        self._settle_disabling(conn, [job_key], now)
        return effects

    # ------------------------------------------------------------------ read helpers for api/
    def node_running(self) -> dict[str, int]:
        """Slots in use per node, for node documents."""
        return {n.node_id: n.used for n in self.nodes.values()}
