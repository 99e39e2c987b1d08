"""A node coming up (join, reboot, reimage, return): its pool's application packages are deployed, then its
pool's start task runs, gating the node's tasks when waitForSuccess is set (batch-semantics-2 §5.1)."""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from kiln.compute.protocol import StepResult
from kiln.core import applications as app_rules
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
        """The node's agent answered (the node is `starting`): it deploys its pool's application packages first,
        as Azure does when a node joins, reboots or is reimaged (not with its first task), then starts."""
        if self.node_packages.get(node.node_id):
            step_id = f"deploy:{node.node_id}:{next(_RUNS)}"
            self.state.step_sent(step_id, StepRef("deploy", "", node.node_id, 0))
            effects.run[node.node_id].append(step_builder.deploy_step(step_id, self._placement(node)))
        else:
            self._start(conn, node, row, now, effects)

    def _deployed(self, conn: Connection, ref: StepRef, result: StepResult, now: datetime, effects: Effects) -> None:
        """The pool's packages are on the node, and it starts; or they could not be deployed, and the node is
        `unusable`: it takes no task (the pool's other nodes do) until a reboot or reimage deploys them again."""
        row, node = db.get(conn, db.nodes, id=ref.node_id), self.nodes.get(ref.node_id)
        if row is None or node is None or row["state"] != NodeState.STARTING:
            return
        if result.failure is None and result.exit_code == 0:
            self._start(conn, node, row, now, effects)
        else:
            errors = app_rules.deployment_errors(result.failure)
            transition(
                conn,
                db.nodes,
                {"id": node.node_id},
                row,
                node_rules.transition(row, NodeState.UNUSABLE, now, errors=errors),
            )
        self._maybe_steady(conn, node.pool_key)

    def _start(self, conn: Connection, node: NodeSlots, row: dict[str, Any], now: datetime, effects: Effects) -> None:
        """The node waits for its start task, or takes tasks now."""
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
        if ref.kind == "deploy":
            self._deployed(conn, ref, result, now, effects)
            return
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
