"""A pool's start task: run on each node as its worker comes up (join, reboot, reimage, return), gating the
node's tasks when waitForSuccess is set (batch-semantics-2 §5.1)."""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from kiln.compute.protocol import StepResult
from kiln.core import node as node_rules
from kiln.core import start_task as start_rules
from kiln.core.node import NodeState
from kiln.core.start_task import Outcome
from kiln.scheduler import steps as step_builder
from kiln.scheduler.parts import SchedulerParts
from kiln.scheduler.slots import NodeSlots
from kiln.scheduler.state import Effects, StepRef, transition
from kiln.store import rows as db

#: Numbers the start task's runs, so that each run has a step id of its own (a node forgets finished ids).
_RUNS = itertools.count(1)


class StartTasks(SchedulerParts):
    """Mixed into Scheduler: a node that comes up runs its start task before (or while) it takes tasks."""

    def _boot(self, conn: Connection, node: NodeSlots, row: dict[str, Any], now: datetime, effects: Effects) -> None:
        """The node's agent answered (the node is `starting`): it waits for its start task, or takes tasks now."""
        spec = row.get("start_task")
        waits = spec is not None and spec.get("waitForSuccess", True)
        changes = node_rules.transition(row, NodeState.WAITING_FOR_START_TASK if waits else NodeState.IDLE, now)
        if spec is not None:
            changes["start_task_info"] = start_rules.first_run(now)
            self._run_start_task(node, spec, 0, effects)
        transition(conn, db.nodes, {"id": node.node_id}, row, changes)
        if not waits:
            self._node_ready(conn, node, now, effects)

    def _run_start_task(self, node: NodeSlots, spec: dict[str, Any], retry_count: int, effects: Effects) -> None:
        step_id = f"start:{node.node_id}:{next(_RUNS)}"
        self.state.step_sent(step_id, StepRef("start", "", node.node_id, retry_count))
        effects.run[node.node_id].append(step_builder.start_step(step_id, spec, self._placement(node)))

    def _start_task_finished(
        self, conn: Connection, ref: StepRef, result: StepResult, now: datetime, effects: Effects
    ) -> None:
        row, node = db.get(conn, db.nodes, id=ref.node_id), self.nodes.get(ref.node_id)
        if row is None or node is None or row["start_task"] is None or row["start_task_info"] is None:
            return
        spec, info = row["start_task"], row["start_task_info"]
        done = start_rules.completed(info, now, result.exit_code, result.failure)
        outcome = start_rules.outcome(spec, info, result.exit_code, result.failure)
        if outcome is Outcome.RETRY:
            retry = start_rules.retried(info, now)
            db.change(conn, db.nodes, {"id": ref.node_id}, {"start_task_info": retry})
            self._run_start_task(node, spec, retry["retryCount"], effects)
            return
        changes: dict[str, Any] = {"start_task_info": done}
        if row["state"] != NodeState.WAITING_FOR_START_TASK:  # waitForSuccess false: the node took tasks already
            db.change(conn, db.nodes, {"id": ref.node_id}, changes)
            return
        if outcome is Outcome.SUCCEEDED:
            changes.update(node_rules.transition(row, NodeState.IDLE, now))
        else:
            errors = start_rules.failed_errors(done)
            changes.update(node_rules.transition(row, NodeState.START_TASK_FAILED, now, errors=errors))
        transition(conn, db.nodes, {"id": ref.node_id}, row, changes)
        if outcome is Outcome.SUCCEEDED:
            self._node_ready(conn, node, now, effects)
