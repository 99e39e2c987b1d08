"""The control plane's memory in one object: nodes and their slots, steps in flight, job queues, preparation
records, multi-instance runs. No I/O: what it decides comes back as `Effects` for the scheduler to commit
and carry out, and `check()` states the invariants that hold between any two transactions.

The scheduler's parts still read and change these maps through `self` (engine.Scheduler aliases them); the
operations below are the ones every part shares, so that each is written once and unit-tested as data.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from kiln import undo
from kiln.compute.protocol import StepResult, Withdrawal
from kiln.core import preparation as prep_rules
from kiln.core import task as task_rules
from kiln.core.dependencies import Stored
from kiln.core.exit_conditions import DependencyAction, ExitOptions, JobAction, for_ended
from kiln.core.job import JobState
from kiln.core.preparation import StepState
from kiln.core.retry import Decision, after_exit
from kiln.core.task import TaskState
from kiln.scheduler.line import TICKETS, JobLine, Key, line_key
from kiln.scheduler.outcomes import exit_options
from kiln.scheduler.priority import job_order
from kiln.scheduler.retention import retain_task
from kiln.scheduler.slots import QUICK_TASK, NodeSlots
from kiln.scheduler.state import (
    Dispatch,
    Effects,
    JobEntry,
    RecordWrite,
    StepRef,
    coordination_step_id,
    task_seq_of,
    task_step_id,
)
from kiln.undo import TrackedDict, TrackedList

if TYPE_CHECKING:
    from kiln.scheduler.multi_instance import Instances

log = logging.getLogger("kiln.scheduler")

#: The environment variable that makes a server check `ControlState.check()` before every commit (the tests
#: set it): a broken invariant fails that transaction, which rolls back, and is logged as CRITICAL.
CHECK_ENV = "KILN_CHECK_STATE"
#: What the log says when an invariant broke: kiln.cli.embedded fails a test server's stop on it.
BROKEN = "control state invariant broken"


class InvariantBroken(AssertionError):
    """The control state contradicts itself: a bug in the scheduler, never a user's error."""


@dataclass(slots=True)
class ControlState:
    """What the scheduler knows between store reads; the store is the truth it is rebuilt from at start."""

    nodes: dict[str, NodeSlots] = field(default_factory=TrackedDict)
    pools: dict[str, dict[str, Any]] = field(default_factory=TrackedDict)
    jobs: dict[str, JobEntry] = field(default_factory=TrackedDict)
    #: preparation/release records of unfinished jobs by (job key, node id)
    preps: dict[tuple[str, str], dict[str, Any]] = field(default_factory=TrackedDict)
    #: tasks in `preparing` on a node by (job key, node id): they start once that node's preparation succeeds
    waiting: dict[tuple[str, str], list[int]] = field(default_factory=TrackedDict)
    steps: dict[str, StepRef] = field(default_factory=TrackedDict)  #: steps in flight by step id
    #: (job key, numberOfInstances) of the multi-instance tasks placement has seen, by task seq (a seq
    #: can be reused once its task is deleted, so entries go with their task or job)
    instance_counts: dict[int, tuple[str, int]] = field(default_factory=TrackedDict)
    instances: dict[int, Instances] = field(default_factory=TrackedDict)  #: running multi-instance tasks by seq
    #: the subtasks' nodes of each multi-instance task's last run, for the retention of their directories
    subtask_nodes: dict[int, list[str]] = field(default_factory=TrackedDict)
    #: a placement round's choice: seq -> instance nodes (the primary first); empty between transactions
    instance_plans: dict[int, list[NodeSlots]] = field(default_factory=TrackedDict)
    #: each pool's jobs that want slots, in the order placement serves them (kept lazily right: JobLine)
    lines: dict[str, JobLine[str]] = field(default_factory=dict)
    #: each pool's jobs whose spec allows task preemption (their state and priority are checked where it matters)
    preemptors: dict[str, set[str]] = field(default_factory=dict)
    #: jobs that were disabling when last tracked or changed: a superset of those still disabling (each is
    #: checked), so that settling them after a node event does not walk every open job
    disabling: set[str] = field(default_factory=set)

    # ------------------------------------------------------------------ stimuli shared by every part
    def tasks_added(self, job_key: str, added: list[tuple[int, int]]) -> bool:
        """New tasks (an add, a job manager) wait for a node. A job that had none queued starts wanting slots:
        under jobDefaultOrder none it takes its turn after the jobs served before now, as if served now. So a
        job that comes, or comes back, never goes before tasks already sent ahead in turn, and those need not be
        withdrawn (over 1,000 jobs, 8 of every 10 tasks sent ahead were, as each new job went first)."""
        entry = self.jobs.get(job_key)
        if entry is not None and added and not len(entry.queue):
            entry.last_served = max(entry.last_served, next(TICKETS))
        return self.tasks_queued(job_key, added)

    def tasks_queued(self, job_key: str, added: list[tuple[int, int]]) -> bool:
        """Active tasks (seq, required slots) wait for a node; False if the job is not (or no longer) tracked."""
        entry = self.jobs.get(job_key)
        if entry is None:
            return False
        for seq, slots in added:
            entry.queue.push(seq, slots)
        return True

    def step_off_node(self, node_id: str, step_id: str, effects: Effects, *, kill: bool) -> StepRef | None:
        """The one way a step leaves its node: its slots are freed, it is no longer sent ahead or in flight,
        and its process is killed if asked and it was known to run."""
        if (node := self.nodes.get(node_id)) is not None:
            node.release(step_id)
            node.ahead.pop(step_id, None)
            node.withdrawing.discard(step_id)
        ref = self.steps.pop(step_id, None)
        if ref is not None and kill:
            effects.kill[node_id].append(step_id)
        return ref

    def task_off_node(self, job_key: str, node_id: str, seq: int, attempt: int, effects: Effects) -> None:
        """A task that holds a node (preparing or running) leaves it: its step goes (killed) and it no longer
        waits for that node's preparation task. Its other instances are the multi-instance part's."""
        self.step_off_node(node_id, task_step_id(seq, attempt), effects, kill=True)
        waiting = self.waiting.get((job_key, node_id), [])
        if seq in waiting:
            waiting.remove(seq)

    def wait_for_preparation(self, job_key: str, node_id: str, seq: int) -> None:
        self.waiting.setdefault((job_key, node_id), TrackedList()).append(seq)

    def node_emptied(self, node_id: str, effects: Effects, *, kill: bool) -> list[StepRef]:
        """A node starts afresh (lost, rebooted, removed): every step on it goes, killed if asked; its
        bookings and tasks sent ahead with them. Returns the steps that were on it, for the caller's rows."""
        gone = [ref for ref in self.steps.values() if ref.node_id == node_id]
        for step_id in [step_id for step_id, ref in self.steps.items() if ref.node_id == node_id]:
            self.step_off_node(node_id, step_id, effects, kill=kill)
        if (node := self.nodes.get(node_id)) is not None:
            node.release_all()
            node.ahead.clear()
            node.withdrawing.clear()
        for key in [key for key in self.waiting if key[1] == node_id]:
            del self.waiting[key]
        return gone

    # ------------------------------------------------------------------ a task starts on a node
    def start_task(
        self, entry: JobEntry, task: dict[str, Any], node: NodeSlots, pool_id: str, now: datetime, effects: Effects
    ) -> None:
        """Placement chose `node` (booked tentatively) for the active `task` (its row): it holds the node from
        now on. Where the job's preparation task has not succeeded on the node, the first such task starts
        it; the task is `preparing` and waits for it (waitForSuccess), or runs beside it."""
        seq = task["seq"]
        if entry.graph is not None:
            entry.graph.started(seq)
        attempt = task["attempt"] + 1
        node.rebook(seq, task_step_id(seq, attempt))
        where = dict(pool_id=pool_id, node_id=node.node_id, attempt=attempt)
        prep_spec = entry.spec.get("jobPreparationTask")
        if prep_spec is not None:
            record = self.ensure_preparation(entry, node, pool_id, now, effects)
            if not prep_rules.succeeded(record) and prep_spec["waitForSuccess"]:
                effects.change_task(task, task_rules.transition(task, TaskState.PREPARING, now, **where))
                self.wait_for_preparation(entry.key, node.node_id, seq)
                return
        changes = task_rules.transition(task, TaskState.RUNNING, now, **where)
        effects.change_task(task, changes)
        undo.update(task, changes)
        self.dispatch_task(entry, task, node, effects)

    def dispatch_task(self, entry: JobEntry, task: dict[str, Any], node: NodeSlots, effects: Effects) -> None:
        """The task (its row says `running`, with the attempt it runs) goes to the node it holds."""
        step_id = task_step_id(task["seq"], task["attempt"])
        self.step_sent(
            step_id,
            StepRef("task", entry.key, node.node_id, task["attempt"], task["seq"], task["required_slots"], row=task),
        )
        effects.node_counters[(node.node_id, "total_tasks_run")] += 1
        effects.dispatch.append(Dispatch("task", step_id, entry.key, node.node_id, task))

    def ensure_preparation(
        self, entry: JobEntry, node: NodeSlots, pool_id: str, now: datetime, effects: Effects
    ) -> dict[str, Any]:
        """The job's preparation record for this incarnation of the node (made by the first task of the job
        there), its preparation task started if it is pending."""
        record = self.preps.get((entry.key, node.node_id))
        if record is None or record["incarnation"] != node.incarnation:
            fresh = prep_rules.new_record(entry.key, pool_id, node.node_id, node.incarnation)
            effects.records.append(RecordWrite(None if record is None else dict(record), dict(fresh)))  # as made
            record = self.record_tracked(fresh)
        if record["prep_state"] == StepState.PENDING:
            self.run_preparation(entry, node, record, now, effects)
        return record

    def run_preparation(
        self, entry: JobEntry, node: NodeSlots, record: dict[str, Any], now: datetime, effects: Effects
    ) -> None:
        """A new attempt of the job's preparation task on the node."""
        self._job_step("prep", entry, node, record, now, effects)

    def _job_step(
        self, kind: str, entry: JobEntry, node: NodeSlots, record: dict[str, Any], now: datetime, effects: Effects
    ) -> None:
        """A new attempt of the job's preparation ("prep") or release ("release") task on the node."""
        attempt = record[f"{kind}_attempt"] + 1
        rule = prep_rules.prep if kind == "prep" else prep_rules.release
        effects.change_record(record, rule(record, StepState.RUNNING, now, attempt=attempt))
        step_id = f"{kind[0]}:{entry.key}:{node.node_id}:{attempt}"
        self.step_sent(step_id, StepRef(kind, entry.key, node.node_id, attempt))
        effects.dispatch.append(Dispatch(kind, step_id, entry.key, node.node_id))

    def preparation_waiters(self, job_key: str, node_id: str) -> list[int]:
        """The tasks `preparing` on the node for the job, whose rows `preparation_finished` needs."""
        return list(self.waiting.get((job_key, node_id), ()))

    def preparation_finished(
        self, ref: StepRef, result: StepResult, waiters: list[dict[str, Any]], now: datetime, effects: Effects
    ) -> bool | None:
        """The preparation task's result (`waiters`: rows of the tasks waiting for it): retried while its retry
        count allows, else completed, and its waiting tasks run (success) or go back to the queue with this
        node excluded for the job (failure). Returns whether it succeeded, None if retried or stale."""
        key = (ref.job_key, ref.node_id)
        record, entry, node = self.preps.get(key), self.jobs.get(ref.job_key), self.nodes.get(ref.node_id)
        if record is None or entry is None or node is None or record["prep_attempt"] != ref.attempt:
            return None
        ok = result.failure is None and result.exit_code == 0
        retriable = result.exit_code is not None or result.timed_out
        retries = entry.spec["jobPreparationTask"]["constraints"]["maxTaskRetryCount"]
        code = result.exit_code if result.exit_code is not None else 1
        if (
            not ok
            and retriable
            and after_exit(code, retry_count=record["prep_retry_count"], max_retries=retries) is Decision.RETRY
        ):
            self.run_preparation(entry, node, record, now, effects)
            return None
        failure = None if ok else (result.failure or task_rules.exit_failure(result.exit_code))
        changes = prep_rules.prep(record, StepState.COMPLETED, now, exit_code=result.exit_code, failure_info=failure)
        effects.change_record(record, changes)
        self.preparation_ended(ref.job_key, ref.node_id)
        for task in waiters:
            if task["state"] != TaskState.PREPARING or task["node_id"] != ref.node_id:
                continue
            if ok:
                changes = task_rules.transition(task, TaskState.RUNNING, now)
                effects.change_task(task, changes)
                undo.update(task, changes)
                self.dispatch_task(entry, task, node, effects)
            else:  # back to the queue; this node is now excluded for the job
                self.task_off_node(entry.key, ref.node_id, task["seq"], task["attempt"], effects)
                effects.change_task(task, task_rules.transition(task, TaskState.ACTIVE, now))
                self.tasks_queued(entry.key, [(task["seq"], task["required_slots"])])
        effects.wake = True
        return ok

    # ------------------------------------------------------------------ a job ends
    def job_ended(
        self, job_key: str, on_node: list[dict[str, Any]], failure: dict[str, Any], now: datetime, effects: Effects
    ) -> list[StepRef]:
        """The job is terminated or deleted (`on_node`: rows of its tasks that hold nodes): those complete with
        `failure`, its running preparation tasks end with it, and its tasks sent ahead are taken back (killed
        in case they just started; they stay active and never run). Returns those, for the caller to move their
        attempts on (their store rows were never changed). Their other instances are the caller's."""
        moved = []
        for node in self.nodes.values():
            for step_id in [i for i, (owner, _, _) in node.ahead.items() if owner == job_key]:
                if (ref := self.step_off_node(node.node_id, step_id, effects, kill=True)) is not None:
                    moved.append(ref)
        for ref in self.job_stopped(job_key, effects):
            record = self.preps[(job_key, ref.node_id)]
            effects.change_record(
                record, prep_rules.prep(record, StepState.COMPLETED, now, exit_code=None, failure_info=failure)
            )
        for task in on_node:
            self.task_off_node(job_key, task["node_id"], task["seq"], task["attempt"], effects)
            effects.change_task(task, task_rules.transition(task, TaskState.COMPLETED, now, failure_info=failure))
            effects.check_jobs.add(job_key)
        effects.wake = True
        return moved

    def job_disabled(
        self, entry: JobEntry, on_node: list[dict[str, Any]], requeue: bool, now: datetime, effects: Effects
    ) -> None:
        """The job is disabled with requeue or terminate (`on_node`: rows of its tasks that hold nodes, their
        other instances ended by the caller first): each leaves its node, back to active (requeueCount + 1,
        not a retry) or completed with TaskEnded."""
        failure = task_rules.ended_by("the job was disabled.")
        for task in on_node:
            self.task_off_node(entry.key, task["node_id"], task["seq"], task["attempt"], effects)
            if requeue:
                changes = task_rules.transition(task, TaskState.ACTIVE, now, requeue=True)
                self.tasks_queued(entry.key, [(task["seq"], task["required_slots"])])
            else:
                changes = task_rules.transition(task, TaskState.COMPLETED, now, failure_info=failure)
                retain_task(effects, entry.row, {**task, **changes}, self._instances_done(task["seq"]))
                effects.check_jobs.add(entry.key)
            effects.change_task(task, changes)

    def run_release(
        self, entry: JobEntry, node: NodeSlots, record: dict[str, Any], now: datetime, effects: Effects
    ) -> None:
        """A new attempt of the job's release task on the node, where its preparation task ran."""
        self._job_step("release", entry, node, record, now, effects)

    def release_finished(
        self, ref: StepRef, result: StepResult, now: datetime, effects: Effects
    ) -> dict[str, Any] | None:
        """The release task's result (never retried): its record completes. Returns the record, None if stale."""
        record = self.preps.get((ref.job_key, ref.node_id))
        if record is None or record["release_attempt"] != ref.attempt:
            return None
        ok = result.failure is None and result.exit_code == 0
        failure = None if ok else (result.failure or task_rules.exit_failure(result.exit_code))
        effects.change_record(
            record,
            prep_rules.release(record, StepState.COMPLETED, now, exit_code=result.exit_code, failure_info=failure),
        )
        return record

    # ------------------------------------------------------------------ a node is ready
    def node_ready(self, node_id: str, now: datetime, effects: Effects) -> None:
        """The node takes tasks (its start task succeeded, or does not hold it back): placement may fill it,
        and the release tasks of ending jobs that waited for it run now."""
        node = self.nodes[node_id]
        node.up = True
        effects.wake = True
        for entry in list(self.jobs.values()):
            record = self.preps.get((entry.key, node_id))
            if (
                entry.row["state"] in (JobState.TERMINATING, JobState.DELETING)
                and record is not None
                and entry.spec.get("jobReleaseTask")
                and prep_rules.needs_release(record, node.incarnation)
            ):
                self.run_release(entry, node, record, now, effects)

    # ------------------------------------------------------------------ a node restarts
    def node_restarting(
        self, node_id: str, *, reimaged_as: int | None, drain: bool, now: datetime, effects: Effects
    ) -> list[StepRef]:
        """A reboot or reimage begins (`reimaged_as`: the new incarnation of a reimage): the node takes no new
        task. Its tasks sent ahead are withdrawn where its tasks may finish first (`drain`: taskcompletion,
        retaineddata), else called back (killed in case they just started, queued again; returned, for the
        caller to move their attempts on). A reimage leaves its preparation records behind; a reboot resets
        those of jobs that rerun their preparation task after one."""
        node = self.nodes[node_id]
        node.draining = True
        moved = []
        if drain:
            self.withdraw(node_id, list(node.ahead), effects)
        else:
            for step_id, (job_key, seq, slots) in list(node.ahead.items()):
                if (ref := self.step_off_node(node_id, step_id, effects, kill=True)) is not None:
                    moved.append(ref)
                self.tasks_queued(job_key, [(seq, slots)])
        if reimaged_as is not None:
            node.incarnation = reimaged_as  # records of the old incarnation no longer count
            return moved
        for (job_key, nid), record in self.preps.items():
            entry = self.jobs.get(job_key)
            rerun = entry is not None and entry.spec["jobPreparationTask"]["rerunOnNodeRebootAfterSuccess"]
            if (
                nid == node_id
                and prep_rules.reset_after_reboot(record, rerun)
                and record["prep_state"] == StepState.COMPLETED
            ):
                effects.change_record(record, prep_rules.prep(record, StepState.PENDING, now))
        return moved

    # ------------------------------------------------------------------ a node is lost
    def node_lost(self, node_id: str, on_node: list[dict[str, Any]], now: datetime, effects: Effects) -> list[StepRef]:
        """The node's processes are gone (`on_node`: rows of the tasks that held it): it takes nothing until it is
        up again; those tasks go back to the queue (requeueCount + 1, not a retry), and its preparation and
        release tasks that were running will run again. Returns the tasks that were sent ahead to it, queued
        again too, for the caller to move their attempts on (their store rows were never changed)."""
        self.nodes[node_id].up = False
        moved = [ref for ref in self.node_emptied(node_id, effects, kill=False) if ref.ahead]
        for ref in moved:
            assert ref.seq is not None, "a task step sent ahead carries its task's seq"
            self.tasks_queued(ref.job_key, [(ref.seq, ref.slots)])
        for task in on_node:
            effects.change_task(task, task_rules.transition(task, TaskState.ACTIVE, now, requeue=True))
            self.tasks_queued(task["job_key"], [(task["seq"], task["required_slots"])])
        for (_, nid), record in self.preps.items():
            if nid != node_id:
                continue
            for kind, rule in (("prep", prep_rules.prep), ("release", prep_rules.release)):
                if record[f"{kind}_state"] == StepState.RUNNING:
                    effects.change_record(record, rule(record, StepState.PENDING, now))
        return moved

    def step_sent(self, step_id: str, ref: StepRef) -> None:
        """A step is in flight (or one sent ahead is known to run): its result is matched on `step_id`."""
        self.steps[step_id] = ref

    def sent_ahead(self, step_id: str, ref: StepRef) -> None:
        """A task step goes to a full node, to start there in a slot its own steps free (scheduler/ahead.py)."""
        assert ref.ahead and ref.seq is not None, "a task step sent ahead"
        self.steps[step_id] = ref
        self.nodes[ref.node_id].ahead[step_id] = (ref.job_key, ref.seq, ref.slots)

    def ahead_started(self, step_id: str, ref: StepRef, row: dict[str, Any], *, running: bool) -> None:
        """The node started a step sent ahead: it holds its slots now, and is in flight as any step if it
        still runs (`row`: its task's row as it now is)."""
        node = self.nodes[ref.node_id]
        node.ahead.pop(step_id, None)
        node.withdrawing.discard(step_id)
        node.book(step_id, ref.slots)
        if running:
            self.steps[step_id] = dataclasses.replace(ref, ahead=False, row=row)

    def withdraw(self, node_id: str, step_ids: Iterable[str], effects: Effects) -> list[str]:
        """Ask the node for these steps sent ahead back, unless it has started them: where nothing requires them
        to stop, a task that started in the moment before must run on (a kill would run its command twice).
        Only those the node gives back are queued again, once it answers (`withdraw_answered`). Returns the
        steps asked now (an answer is on its way for the others)."""
        node = self.nodes[node_id]
        asked = [i for i in step_ids if i in node.ahead and i not in node.withdrawing]
        node.withdrawing.update(asked)
        if asked:
            effects.withdraw[node_id].extend(asked)
        return asked

    def withdraw_answered(self, node_id: str, asked: list[str], answer: Withdrawal, effects: Effects) -> list[StepRef]:
        """The node's answer: the steps it gave back leave it and are queued again (returned, for their rows);
        those it had started stay asked until their notice comes; those it did not know may be asked again."""
        node = self.nodes.get(node_id)
        if node is None:
            return []
        moved = []
        for step_id in answer.withdrawn:
            if step_id in node.ahead:  # else taken back meanwhile (the job ended, the node was lost)
                owner, seq, slots = node.ahead[step_id]
                ref = self.step_off_node(node_id, step_id, effects, kill=False)
                if ref is not None:
                    moved.append(ref)
                if (entry := self.jobs.get(owner)) is not None:
                    entry.queue.push(seq, slots)
        started = set(answer.started)
        node.withdrawing.difference_update(i for i in asked if i not in started)
        return moved

    def step_ended(self, step_id: str) -> StepRef | None:
        """A step's final result came: it is no longer in flight (its slots are the caller's to free)."""
        return self.steps.pop(step_id, None)

    def preparation_ended(self, job_key: str, node_id: str) -> list[int]:
        """The job's preparation on the node ended: the tasks that waited for it, which wait no more."""
        return self.waiting.pop((job_key, node_id), [])

    def record_tracked(self, record: dict[str, Any]) -> dict[str, Any]:
        """A preparation/release record (new, or fresh for a new incarnation of its node) is the one memory keeps."""
        self.preps[(record["job_key"], record["node_id"])] = record
        return record

    # ------------------------------------------------------------------ task outcomes
    def task_ended(
        self, ref: StepRef, task: dict[str, Any] | None, result: StepResult, now: datetime, effects: Effects
    ) -> bool:
        """A task step's final result; `task` is its row as it now is (None: deleted). Retried (queued again)
        or completed, with its dependents released, its job's action noted and its directories' retention
        timed. True if the attempt's other instances ended with it: their rows are the caller's to complete."""
        assert ref.seq is not None, "a task step belongs to a task"
        # the task's step id, not the result's: a multi-instance primary reports under its instance's id
        self.step_off_node(ref.node_id, task_step_id(ref.seq, ref.attempt), effects, kill=False)
        if (node := self.nodes.get(ref.node_id)) is not None:
            node.quick = result.end_time - result.start_time < QUICK_TASK
        if task is None or task["state"] != TaskState.RUNNING or task["attempt"] != ref.attempt:
            return False  # stale: the task was ended, requeued or deleted meanwhile
        instances = self.instances_end(task["seq"], effects)
        failure = result.failure
        decision = after_exit(
            result.exit_code,
            retry_count=task["retry_count"],
            max_retries=task["max_retries"],
            retriable=result.exit_code is not None and not result.upload_failed,
        )
        if decision is Decision.RETRY:
            changes = task_rules.transition(task, TaskState.ACTIVE, now, retry=True, exit_code=result.exit_code)
            self.tasks_queued(task["job_key"], [(task["seq"], task["required_slots"])])
        else:
            if failure is None and result.exit_code != 0:
                failure = task_rules.exit_failure(result.exit_code)
            changes = task_rules.transition(
                task, TaskState.COMPLETED, _ended(task, result, now), exit_code=result.exit_code, failure_info=failure
            )
            changes["start_time"] = task["start_time"]
            options = exit_options(task, result.exit_code, upload_error=result.upload_failed)
            changes["dependency_action"] = options.dependency_action.value
            if (entry := self.jobs.get(ref.job_key)) is not None:
                retain_task(effects, entry.row, {**task, **changes}, self._instances_done(task["seq"]))
                self.task_completed(ref.job_key, task, options, effects)
            if failure is None:
                effects.node_counters[(ref.node_id, "total_tasks_succeeded")] += 1
            effects.check_jobs.add(ref.job_key)
        effects.change_task(task, changes)
        return instances

    def task_completed(
        self, job_key: str, task: dict[str, Any], options: ExitOptions, effects: Effects, *, job_action: bool = True
    ) -> None:
        """A task completed (exited, or ended by a user): its dependents may run now; its job's action is
        carried out once the batch is written."""
        entry = self.jobs.get(job_key)
        if entry is None:
            return
        if entry.graph is not None:
            entry.graph.started(task["seq"])
            satisfied = options.dependency_action is DependencyAction.SATISFY
            for seq, slots in entry.graph.complete(task["key"], satisfied):
                entry.queue.push(seq, slots)
                effects.wake = True
        if job_action and options.job_action is not JobAction.NONE:
            effects.job_actions.append((job_key, options.job_action))

    def task_stopped(self, task: dict[str, Any], delete: bool, now: datetime, effects: Effects) -> StepRef | None:
        """A user terminates or deletes the task (its row): sent ahead, it is taken back (killed in case it
        just started); holding a node, it leaves it (killed); it leaves its queue. Terminated, it completes with
        TaskEnded, its exitConditions' dependency action for its dependents; deleted, its dependents stop
        waiting for it where Batch says so. Returns the step taken back, for the caller to move the task's
        attempt on in the store. Its other instances and the delete of its row are the caller's."""
        job_key, seq = task["job_key"], task["seq"]
        taken_back = None
        if task["state"] == TaskState.ACTIVE:
            step_id = task_step_id(seq, task["attempt"] + 1)
            ref = self.steps.get(step_id)
            if ref is not None and ref.ahead and step_id in self.nodes[ref.node_id].ahead:
                taken_back = self.step_off_node(ref.node_id, step_id, effects, kill=True)
                undo.update(
                    task, {"attempt": ref.attempt}
                )  # as the store will have it: the change below is guarded by it
        if task["state"] in (TaskState.PREPARING, TaskState.RUNNING):
            self.task_off_node(job_key, task["node_id"], seq, task["attempt"], effects)
            effects.wake = True
        if (entry := self.jobs.get(job_key)) is not None:
            entry.queue.remove(seq)
        if delete:
            self.task_deleted(job_key, task, effects)
        elif task["state"] != TaskState.COMPLETED:
            changes = task_rules.transition(
                task,
                TaskState.COMPLETED,
                now,
                failure_info=task_rules.ended_by("terminated by the user."),
                exit_code=None,
            )
            options = for_ended(task["spec"].get("exitConditions"))
            changes["dependency_action"] = options.dependency_action.value
            effects.change_task(task, changes)
            self.task_completed(job_key, task, options, effects, job_action=False)
            effects.check_jobs.add(job_key)
        return taken_back

    def task_deleted(self, job_key: str, task: dict[str, Any], effects: Effects) -> None:
        """A deleted parent is missing again: listed by id it is waited for; in a range it no longer counts."""
        entry = self.jobs.get(job_key)
        if entry is not None and entry.graph is not None:
            for seq, slots in entry.graph.remove(task["seq"], task["key"]):
                entry.queue.push(seq, slots)
                effects.wake = True

    def dependent_tasks_added(self, job_key: str, rows: Iterable[dict[str, Any]], stored: Stored | None = None) -> None:
        """Tasks added to a job that uses dependencies: those with nothing to wait for join the queue. stored:
        which of the parents they name, that the graph does not hold, the store has (DependencyGraph.add)."""
        entry = self.jobs.get(job_key)
        if entry is not None and entry.graph is not None:
            for seq, slots in entry.graph.add(rows, stored):
                entry.queue.push(seq, slots)

    # ------------------------------------------------------------------ jobs
    def job_tracked(self, row: dict[str, Any]) -> JobEntry:
        """The job is followed (created, or ending after a restart found it completed): its row is `row`."""
        entry = self.jobs.setdefault(row["key"], JobEntry(row))
        entry.row = row
        self.job_changed(entry)
        return entry

    def job_changed(self, entry: JobEntry) -> None:
        """The job's row is new: where it wants slots it is in its pool's line (its queue lists it again each
        time it fills), and its pool knows whether it allows task preemption."""
        job_key, pool_key = entry.key, entry.row["pool_key"]
        entry.queue.on_refill = partial(self.job_wants_slots, job_key)
        for members in self.preemptors.values():
            members.discard(job_key)
        if entry.spec.get("allowTaskPreemption"):
            self.preemptors.setdefault(pool_key, set()).add(job_key)
        if entry.row["state"] == JobState.DISABLING:
            self.disabling.add(job_key)
        else:
            self.disabling.discard(job_key)
        self.job_wants_slots(job_key)

    def job_wants_slots(self, job_key: str) -> None:
        entry = self.jobs.get(job_key)
        if entry is not None and (key := self.line_key(job_key, entry.row["pool_key"])) is not None:
            self.line_of(entry.row["pool_key"]).want(job_key, key)

    def line_key(self, job_key: str, pool_key: str) -> Key | None:
        """The job's place in the pool's line now (`line.line_key`), or None if it wants none of its slots."""
        entry = self.jobs.get(job_key)
        if entry is None or not len(entry.queue):
            return None
        if entry.row["pool_key"] != pool_key or entry.row["state"] != JobState.ACTIVE:
            return None
        return self.place(entry, entry.last_served)

    def place(self, entry: JobEntry, served: int) -> Key:
        """The job's place in its pool's line had it been served at ticket `served` (`line.line_key`, under the
        pool's jobDefaultOrder)."""
        pool = self.pools.get(entry.row["pool_key"])  # a job may come before its (auto) pool: it waits for it
        order = job_order(pool["spec"]) if pool is not None else "none"
        return line_key(entry.row["priority"], entry.row["seq"], served, order)

    def line_of(self, pool_key: str) -> JobLine[str]:
        return self.lines.setdefault(pool_key, JobLine())

    def job_stopped(self, job_key: str, effects: Effects) -> list[StepRef]:
        """The job ends (terminate, delete, onAllTasksComplete): nothing of it starts again. Its queue empties,
        no task waits for a preparation task, and its preparation steps are killed; returns those steps (their
        records are the caller's). Tasks on nodes are ended one by one by the caller (`task_off_node`)."""
        self.jobs[job_key].queue.clear()
        for key in [key for key in self.waiting if key[0] == job_key]:
            del self.waiting[key]
        preps = [(step_id, ref) for step_id, ref in self.steps.items() if ref.job_key == job_key and ref.kind == "prep"]
        for step_id, ref in preps:
            self.step_off_node(ref.node_id, step_id, effects, kill=True)
        return [ref for _, ref in preps]

    def job_forgotten(self, job_key: str, *, removed: bool) -> None:
        """The job completed (its records stay stored) or was removed (its tasks too: their multi-instance
        bookkeeping goes)."""
        self.jobs.pop(job_key, None)
        self.disabling.discard(job_key)
        for members in self.preemptors.values():
            members.discard(job_key)
        for key in [key for key in self.preps if key[0] == job_key]:
            del self.preps[key]
        if removed:
            for seq in [seq for seq, (key, _) in self.instance_counts.items() if key == job_key]:
                self.task_forgotten(seq)

    def task_forgotten(self, seq: int) -> None:
        """A task is deleted: a new task may get its seq."""
        self.instance_counts.pop(seq, None)
        self.subtask_nodes.pop(seq, None)

    def kept_row_dropped(self, step_id: str) -> None:
        """The task's spec changed while its step runs: its result reads the whole row again."""
        ref = self.steps.get(step_id)
        if ref is not None and ref.row is not None:
            self.steps[step_id] = dataclasses.replace(ref, row=None)

    # ------------------------------------------------------------------ pools and nodes
    def pool_tracked(self, row: dict[str, Any]) -> None:
        """The pool's row as memory keeps it (created, resized, being deleted)."""
        self.pools[row["key"]] = row

    def pool_forgotten(self, pool_key: str) -> None:
        self.pools.pop(pool_key, None)

    def node_tracked(self, node: NodeSlots) -> None:
        """A node joins its pool (or is found again after a restart): it takes tasks once it is up."""
        self.nodes[node.node_id] = node

    def node_forgotten(self, node_id: str) -> None:
        """The node left its pool (removed, or never started): its records stay stored."""
        self.nodes.pop(node_id, None)

    # ------------------------------------------------------------------ multi-instance tasks
    def instances_planned(self, seq: int, nodes: list[NodeSlots]) -> None:
        """A placement round chose the instance nodes (primary first): each subtask node holds a slot for it
        now, the primary's slot is placement's own tentative booking."""
        for node in nodes[1:]:
            node.book(seq, 1)
        self.instance_plans[seq] = nodes

    def instance_plan_taken(self, seq: int) -> list[NodeSlots] | None:
        """The task starts on the round's choice: its tentative bookings are the caller's to rebook."""
        return self.instance_plans.pop(seq, None)

    def instance_plan_dropped(self, seq: int) -> None:
        """The task cannot start on the round's choice: the subtask nodes' tentative slots are freed."""
        for node in (self.instance_plan_taken(seq) or [])[1:]:
            node.release(seq)

    def instance_count_seen(self, seq: int, job_key: str, count: int | None) -> None:
        """How many instances the task has (None: not a multi-instance task), for the next placement round."""
        if count is None:
            self.instance_counts.pop(seq, None)
        else:
            self.instance_counts[seq] = (job_key, count)

    def instances_started(self, running: Instances) -> None:
        self.instances[running.seq] = running
        self.subtask_nodes[running.seq] = running.node_ids[1:]

    def _instances_done(self, seq: int) -> list[str]:
        """The task completed: memory forgets its instances (a reactivated task counts them again); its subtask
        nodes, for the retention of their directories, are the caller's."""
        self.instance_counts.pop(seq, None)
        return self.subtask_nodes.pop(seq, [])

    def instances_end(self, seq: int, effects: Effects) -> bool:
        """The task's attempt ended (primary exited, failed, ended, requeued): every instance's coordination
        command is killed with what it left running and its slot freed. True if it ran as a multi-instance
        task (its subtask rows are the caller's to complete); the primary's own step is the caller's."""
        running = self.instances.pop(seq, None)
        if running is None:
            return False
        for index, node_id in enumerate(running.node_ids):
            step_id = coordination_step_id(seq, running.attempt, index)
            self.step_off_node(node_id, step_id, effects, kill=False)
            effects.kill[node_id].append(step_id)  # even if it ended: what it left running goes with its id
        effects.wake = True
        return True

    # ------------------------------------------------------------------ invariants
    def check(self) -> None:
        """Raise InvariantBroken if memory contradicts itself. Holds between transactions (placement books
        tentatively inside one and settles every booking before it ends)."""
        try:
            self._check()
        except AssertionError as exc:
            log.critical("%s: %s", BROKEN, exc)
            raise InvariantBroken(f"{BROKEN}: {exc}") from None

    def _check(self) -> None:
        on_node: dict[int, str] = {}  # task seq -> the node its step holds
        for node in self.nodes.values():
            node.check()
            for holder in node.booked:
                assert isinstance(holder, str), f"tentative booking {holder} on {node.node_id} outlived its round"
                seq = task_seq_of(holder)
                if seq is not None:
                    assert seq not in on_node, f"task {seq} holds {on_node[seq]} and {node.node_id}"
                    on_node[seq] = node.node_id
            for step_id, (job_key, seq, slots) in node.ahead.items():
                ref = self.steps.get(step_id)
                assert ref is not None and ref.ahead, f"{step_id} sent ahead to {node.node_id} is not in flight"
                assert (ref.node_id, ref.job_key, ref.seq, ref.slots) == (node.node_id, job_key, seq, slots), ref
        for step_id, ref in self.steps.items():
            if ref.kind == "task" and not ref.ahead and ref.node_id in self.nodes:
                booked = self.nodes[ref.node_id].booked.get(step_id)
                assert booked == ref.slots, f"{step_id} runs on {ref.node_id} holding {booked}, not {ref.slots}"
            if ref.ahead:
                assert step_id in self.nodes[ref.node_id].ahead, f"{step_id} is ahead but not on its node"
        ahead = {ref.seq for ref in self.steps.values() if ref.ahead}
        for entry in self.jobs.values():
            if entry.row["state"] == JobState.DISABLING:
                assert entry.key in self.disabling, f"job {entry.key} is disabling, not listed as such"
            queue = entry.queue
            assert queue.queued == {seq for seq, _ in queue.heap}, f"job {entry.key}'s queue set is not its heap"
            assert len(queue.queued) == len(queue.heap), f"job {entry.key} queues a task twice"
            assert all(
                queue.heap[i] <= queue.heap[c]
                for i in range(len(queue.heap))
                for c in (2 * i + 1, 2 * i + 2)
                if c < len(queue.heap)
            ), f"job {entry.key}'s queue is not a heap"
            if self.line_key(entry.key, entry.row["pool_key"]) is not None:
                assert entry.key in self.lines[entry.row["pool_key"]].listed, (
                    f"job {entry.key} wants slots, not in line"
                )
            for seq in queue.queued:
                assert seq not in on_node, f"task {seq} is queued and holds node {on_node.get(seq)}"
                assert seq not in ahead, f"task {seq} is queued and sent ahead"
        for (_, node_id), seqs in self.waiting.items():
            for seq in seqs:
                assert on_node.get(seq) == node_id, f"task {seq} waits for {node_id}'s preparation off that node"
        for line in self.lines.values():
            line.check()
        assert not self.instance_plans, f"instance plans {sorted(self.instance_plans)} outlived their round"


def _ended(task: dict[str, Any], result: StepResult, now: datetime) -> datetime:
    """When the task's process ended, by the node's clock: the next task in its slot (one sent ahead) may
    have started before this result reached the store, and their times must not overlap."""
    ended = datetime.fromtimestamp(result.end_time, UTC)
    started = task["start_time"]
    return ended if started is not None and started <= ended <= now else now
