"""Multi-instance tasks in the scheduler: place all instances at once on distinct nodes, run the
coordination command on each, then the primary's commandLine, and end every instance with the task.

The task row is the primary (its node, its `t:<seq>:<attempt>` step, its slot), so the engine's own
paths end, kill and requeue it; they call `_end_instances` to end the rest. Subtask nodes hold one
slot each while the task runs. Step ids: `c:<seq>:<attempt>:<instance>` for coordination commands
(they keep their background processes until that id is killed, when the task ends).
Rules (eligible pools, the environment, subtask states) live in kiln.core.multi_instance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from kiln import undo
from kiln.compute.protocol import Step, StepResult
from kiln.core import multi_instance as rules
from kiln.core import preparation as prep_rules
from kiln.core import task as task_rules
from kiln.core.multi_instance import Next, SubtaskState
from kiln.core.task import TaskState
from kiln.scheduler import steps as step_builder
from kiln.scheduler.control import ControlState
from kiln.scheduler.parts import SchedulerParts
from kiln.scheduler.priority import Chooser
from kiln.scheduler.slots import NodeSlots, choose_node
from kiln.scheduler.state import (
    ON_NODE,
    Effects,
    JobEntry,
    StepRef,
    coordination_step_id,
    requeue,
    task_step_id,
    transition,
)
from kiln.store import rows as db
from kiln.undo import Tracked, TrackedSet


@dataclass(slots=True)
class Instances(Tracked):
    """A running multi-instance task: its instances' nodes (0 = primary) and coordination progress."""

    job_key: str
    seq: int
    attempt: int
    node_ids: list[str]
    coordinated: set[int] = field(default_factory=TrackedSet)  #: instances whose coordination command exited 0
    preparing: set[int] = field(default_factory=TrackedSet)  #: instances waiting for the job preparation task


class MultiInstance(SchedulerParts):
    """Mixed into Scheduler; uses its store, nodes, pools, steps and queues."""

    def _init_multi_instance(self, state: ControlState) -> None:
        self.instance_counts, self.instances = state.instance_counts, state.instances
        self.subtask_nodes, self._instance_plans = state.subtask_nodes, state.instance_plans

    # ------------------------------------------------------------------ placement
    def _chooser(self, pool: dict[str, Any], fill: str) -> Chooser:
        """Placement's node choice for a pool: a multi-instance task takes all its nodes at once."""

        def choose(
            seq: int, slots: int, nodes: list[NodeSlots], allowed: Callable[[NodeSlots], bool]
        ) -> NodeSlots | None:
            if seq in self.instance_counts:
                return self._plan_instances(seq, pool, nodes, fill, allowed)
            return choose_node(nodes, slots, fill, allowed)

        return choose

    def _plan_instances(
        self,
        seq: int,
        pool: dict[str, Any],
        candidates: list[NodeSlots],
        fill: str,
        allowed: Callable[[NodeSlots], bool],
    ) -> NodeSlots | None:
        """All instances at once on distinct nodes with a free slot, or none (the task stays active).
        Returns the primary's node; the subtasks' nodes are claimed here."""
        if not rules.pool_can_run(pool["spec"]):
            return None
        count = self.instance_counts[seq][1]
        free = [n for n in candidates if n.free >= 1 and allowed(n)]
        if len(free) < count:
            return None
        chosen: list[NodeSlots] = []
        for _ in range(count):
            node = choose_node([n for n in free if n not in chosen], 1, fill, lambda _n: True)
            assert node is not None, "count nodes were free"
            chosen.append(node)
        self.state.instances_planned(seq, chosen)
        return chosen[0]

    def _start_multi_instance(
        self,
        conn: Connection,
        entry: JobEntry,
        task: dict[str, Any],
        node: NodeSlots,
        slots: int,
        now: datetime,
        effects: Effects,
    ) -> bool:
        """Placement's row check: False for an ordinary task. A multi-instance task placed before its
        instance count was known goes back to the queue, to be planned with all its nodes next round."""
        count = rules.instances(task["spec"])
        known = self.instance_counts.get(task["seq"])
        if count != (known[1] if known else None):  # first sight, or a stale entry of a reused seq
            self.state.instance_plan_dropped(task["seq"])
            self.state.instance_count_seen(task["seq"], entry.key, count)
            if count is None:
                return False
            node.release(task["seq"])
            entry.queue.push(task["seq"], slots)
            effects.wake = True
            return True
        plan = self.state.instance_plan_taken(task["seq"])
        if count is None:
            return False
        assert plan is not None, "placed by _chooser, which plans every counted task"
        self._start_instances(conn, entry, task, plan, now, effects)
        return True

    def _start_instances(
        self,
        conn: Connection,
        entry: JobEntry,
        task: dict[str, Any],
        plan: list[NodeSlots],
        now: datetime,
        effects: Effects,
    ) -> None:
        """Bind every instance; the coordination commands start once the job preparation task (waitForSuccess)
        has succeeded on every instance's node. Meanwhile the task is `preparing`."""
        seq, attempt = task["seq"], task["attempt"] + 1
        pool_id = self.pools[plan[0].pool_key]["id"]
        plan[0].rebook(seq, task_step_id(seq, attempt))
        for index, node in enumerate(plan[1:], 1):
            node.rebook(seq, coordination_step_id(seq, attempt, index))
        prep_spec = entry.spec.get("jobPreparationTask")
        preparing: set[int] = set()
        if prep_spec is not None:
            for index, node in enumerate(plan):
                record = self._ensure_prep(conn, entry, node, now, effects)
                if prep_spec["waitForSuccess"] and not prep_rules.succeeded(record):
                    preparing.add(index)
        changes = task_rules.transition(
            task,
            TaskState.PREPARING if preparing else TaskState.RUNNING,
            now,
            pool_id=pool_id,
            node_id=plan[0].node_id,
            attempt=attempt,
        )
        effects.change_task(task, changes)
        undo.update(task, changes)
        running = Instances(entry.key, seq, attempt, [n.node_id for n in plan], preparing=TrackedSet(preparing))
        self.state.instances_started(running)
        db.remove(conn, db.subtasks, task_seq=seq)
        db.insert_rows(
            conn,
            db.subtasks,
            [
                rules.new_subtask(entry.key, seq, i, attempt, pool_id, node_id, now, preparing=i in preparing)
                for i, node_id in enumerate(running.node_ids)
            ],
        )
        if not preparing:
            self._dispatch_coordination(entry, task, running, effects)

    def _dispatch_coordination(
        self, entry: JobEntry, task: dict[str, Any], running: Instances, effects: Effects
    ) -> None:
        seq, attempt = running.seq, running.attempt
        for index, node in enumerate(self.nodes[n] for n in running.node_ids):
            step_id = coordination_step_id(seq, attempt, index)
            self.state.step_sent(step_id, StepRef("coord", entry.key, node.node_id, attempt, seq))
            effects.node_counters[(node.node_id, "total_tasks_run")] += 1
            effects.run[node.node_id].append(self._instance_step(step_id, entry, task, running, index))

    def _instance_step(
        self, step_id: str, entry: JobEntry, task: dict[str, Any], running: Instances, index: int | None
    ) -> Step:
        """index None: the primary's commandLine; else that instance's coordination command."""
        node = self.nodes[running.node_ids[index or 0]]
        where = self._placement(node)
        base = step_builder.task_step(step_id, entry.row, task, where)
        hosts = [self.backend.node_address(n) for n in running.node_ids]
        context = {**base.batch_context, **rules.environment(running.node_ids, index or 0, hosts)}
        if index is None:
            return replace(base, batch_context=context)
        settings = task["spec"]["multiInstanceSettings"]
        return replace(
            base,
            command_line=settings["coordinationCommandLine"],
            resource_files=(),
            output_files=(),  # the primary's alone
            shared_files=step_builder.resource_files(settings.get("commonResourceFiles"), where.auto_storage),
            keep_background=True,
            batch_context=context,
        )

    # ------------------------------------------------------------------ results
    def _instances_prepared(
        self, conn: Connection, job_key: str, node_id: str, ok: bool, now: datetime, effects: Effects
    ) -> None:
        """The job preparation task ended on a node: instances waiting there go on, or (it failed; the node
        is now excluded for the job) their task goes back to the queue as a whole."""
        for seq, running in list(self.instances.items()):
            if running.job_key != job_key or node_id not in running.node_ids:
                continue
            index = running.node_ids.index(node_id)
            task = db.get(conn, db.tasks, seq=seq)
            if (
                index not in running.preparing
                or task is None
                or task["state"] != TaskState.PREPARING
                or task["attempt"] != running.attempt
            ):
                continue
            if not ok:
                self._take_off_node(conn, task, now, effects)
                effects.change_task(task, task_rules.transition(task, TaskState.ACTIVE, now))
                self._requeue_in_memory(task)
                continue
            running.preparing.discard(index)
            row = db.get(conn, db.subtasks, task_seq=seq, id=index)
            if row is not None and row["state"] == SubtaskState.PREPARING:
                transition(
                    conn,
                    db.subtasks,
                    {"task_seq": seq, "id": index},
                    row,
                    rules.transition(row, SubtaskState.RUNNING, now),
                )
            if not running.preparing and (entry := self.jobs.get(job_key)) is not None:
                changes = task_rules.transition(task, TaskState.RUNNING, now)
                effects.change_task(task, changes)
                undo.update(task, changes)
                self._dispatch_coordination(entry, task, running, effects)

    def _coordination_finished(
        self, conn: Connection, ref: StepRef, result: StepResult, now: datetime, effects: Effects
    ) -> None:
        assert ref.seq is not None, "coordination steps carry their task's seq"
        running = self.instances.get(ref.seq)
        if running is None or running.attempt != ref.attempt or ref.node_id not in running.node_ids:
            return
        index = running.node_ids.index(ref.node_id)
        row = db.get(conn, db.subtasks, task_seq=ref.seq, id=index)
        if row is not None and row["state"] == SubtaskState.RUNNING:
            transition(
                conn,
                db.subtasks,
                {"task_seq": ref.seq, "id": index},
                row,
                rules.transition(row, SubtaskState.RUNNING, now, exit_code=result.exit_code),
            )
        task = db.get(conn, db.tasks, seq=ref.seq)
        if task is None or task["state"] != TaskState.RUNNING or task["attempt"] != ref.attempt:
            return
        step = rules.after_coordination(
            result.exit_code, result.failure, len(running.coordinated), len(running.node_ids)
        )
        if step is Next.FAIL:  # the whole task fails with this instance's outcome (and may be retried)
            self._task_finished(
                conn,
                StepRef("task", ref.job_key, running.node_ids[0], ref.attempt, ref.seq, task["required_slots"]),
                task,
                result,
                now,
                effects,
            )
            return
        running.coordinated.add(index)
        if step is Next.RUN_APPLICATION and (entry := self.jobs.get(ref.job_key)) is not None:
            step_id = task_step_id(ref.seq, ref.attempt)
            self.state.step_sent(
                step_id, StepRef("task", ref.job_key, running.node_ids[0], ref.attempt, ref.seq, task["required_slots"])
            )
            effects.run[running.node_ids[0]].append(self._instance_step(step_id, entry, task, running, None))

    # ------------------------------------------------------------------ ending
    def _end_instances(self, conn: Connection, seq: int, now: datetime, effects: Effects) -> None:
        """The task's attempt ended (primary exited, failed, ended, requeued): kill every instance's
        coordination command and what it left running, free the subtasks' slots, complete their rows.
        The primary's own step and slot are the caller's."""
        if self.state.instances_end(seq, effects):
            self._complete_subtasks(conn, seq, now)

    def _complete_subtasks(self, conn: Connection, seq: int, now: datetime) -> None:
        """The rows of a multi-instance task's instances, once its attempt ended."""
        for row in db.find(conn, db.subtasks, task_seq=seq):
            if row["state"] != SubtaskState.COMPLETED:
                ended = None if row["exit_code"] is not None else task_rules.ended_by("the multi-instance task ended.")
                transition(
                    conn,
                    db.subtasks,
                    {"task_seq": seq, "id": row["id"]},
                    row,
                    rules.transition(row, SubtaskState.COMPLETED, now, failure_info=ended),
                )

    def _instances_lost(self, conn: Connection, node_id: str, now: datetime, effects: Effects) -> None:
        """A node of a running multi-instance task is gone: the task is requeued as a whole. A primary on
        that node is requeued by the caller with the node's other tasks."""
        for seq, running in list(self.instances.items()):
            if node_id not in running.node_ids:
                continue
            task = db.get(conn, db.tasks, seq=seq)
            if running.node_ids[0] == node_id or task is None or task["state"] not in ON_NODE:
                self._end_instances(conn, seq, now, effects)
                continue
            self._take_off_node(conn, task, now, effects)
            requeue(conn, task, now)
            self._requeue_in_memory(task)

    def _subtask_nodes_terminated(
        self, conn: Connection, node_id: str, failure: dict[str, Any], now: datetime, effects: Effects
    ) -> None:
        """Reboot or reimage with `terminate` of a subtask's node ends its whole task (the caller ends the tasks
        whose primary runs there)."""
        for seq, running in list(self.instances.items()):
            if node_id not in running.node_ids[1:]:
                continue
            task = db.get(conn, db.tasks, seq=seq)
            if task is None or task["state"] not in ON_NODE:
                continue
            self._end_on_node(conn, task, failure, now, effects)

    def _forget_instances(
        self, conn: Connection, task: dict[str, Any], entry: JobEntry | None, effects: Effects
    ) -> None:
        """The task is deleted: its rows go, and its directories on the subtasks' nodes (the caller removes
        the primary's)."""
        self.state.task_forgotten(task["seq"])
        for row in db.find(conn, db.subtasks, task_seq=task["seq"]):
            if row["id"] > 0 and entry is not None:
                effects.remove_dirs.append((row["node_id"], step_builder.task_dir(entry.row["id"], task["id"])))
        db.remove(conn, db.subtasks, task_seq=task["seq"])

    def _recover_instances(self, conn: Connection) -> None:
        """After a restart every unfinished task is active again: its last attempt's instance rows go."""
        db.remove_unfinished_subtasks(conn)
