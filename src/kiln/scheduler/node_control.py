"""Node scheduling (disable, enable), removing chosen nodes from a pool, and stopping a resize
(batch-semantics §5.1, §5.2)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from kiln import story
from kiln.core import node as node_rules
from kiln.core import pool as pool_rules
from kiln.core import task as task_rules
from kiln.core.node import NodeState, SchedulingState
from kiln.core.pool import AllocationState
from kiln.errors import Conflict, NotFound
from kiln.scheduler.faults import PREEMPT
from kiln.scheduler.parts import SchedulerParts
from kiln.scheduler.slots import NodeSlots
from kiln.scheduler.state import ON_NODE, Effects, JobEntry, requeue, transition
from kiln.store import rows as db
from kiln.wire.times import now as utcnow

#: What becomes of a node's tasks when it stops taking work (nodeDisableSchedulingOption,
#: nodeDeallocationOption): requeued, terminated, or left to finish (taskcompletion, retaineddata).
REQUEUE, TERMINATE = "requeue", "terminate"
#: How long a preempted spot node stays away before it returns as a fresh node.
PREEMPTED_FOR = timedelta(seconds=2)


class NodeControl(SchedulerParts):
    """Mixed into Scheduler: operations that take nodes out of work without restarting them."""

    def _vacate(
        self, conn: Connection, node: NodeSlots, option: str, why: str, now: datetime, effects: Effects
    ) -> None:
        """The node takes no new task; its tasks are requeued (requeueCount + 1), terminated (TaskEnded) or,
        for taskcompletion and retaineddata, left to finish."""
        node.draining = True
        if option in (TERMINATE, REQUEUE):
            self._call_back(conn, node, effects)  # tasks sent ahead go back to the queue
        else:  # those that started in the moment before finish, as running tasks do
            self.state.withdraw(node.node_id, list(node.ahead), effects)
        if option == TERMINATE:
            failure = task_rules.ended_by(why)
            self._subtask_nodes_terminated(conn, node.node_id, failure, now, effects)
            for task in db.tasks_in_states(conn, ON_NODE, node_id=node.node_id):
                self._end_on_node(conn, task, failure, now, effects)
        elif option == REQUEUE:
            self._instances_lost(conn, node.node_id, now, effects)
            for task in db.tasks_in_states(conn, ON_NODE, node_id=node.node_id):
                self._take_off_node(conn, task, now, effects)
                requeue(conn, task, now)
                self._requeue_in_memory(task)
        self._settle_disabling(conn, self._disabling_jobs(), now)
        effects.wake = True

    # ------------------------------------------------------------------ affinity
    def _prefer_affinity(self, entry: JobEntry, task: dict[str, Any], node: NodeSlots, slots: int) -> NodeSlots:
        """A task's affinityInfo (`TVM:<node id>`, a node's affinityId) is a preference, as on Azure: the task
        moves to that node when it has room and may run the job's tasks, else it stays where placement put it."""
        affinity = (task["spec"].get("affinityInfo") or {}).get("affinityId") or ""
        wanted = self.nodes.get(affinity.removeprefix("TVM:"))
        if (
            wanted is None
            or wanted is node
            or "multiInstanceSettings" in task["spec"]  # its nodes are planned together
            or wanted.pool_key != node.pool_key
            or wanted.free < slots
            or not self._may_run(entry, wanted)
        ):
            return node
        node.release(task["seq"])
        wanted.book(task["seq"], slots)  # tentative, as placement's own booking was
        return wanted

    # ------------------------------------------------------------------ scheduling
    async def set_node_scheduling(self, node_id: str, enabled: bool, option: str = REQUEUE) -> None:
        async with self.lock:
            effects = await self.db.write(lambda conn: self._set_node_scheduling(conn, node_id, enabled, option))
        await self._act(effects)

    def _set_node_scheduling(self, conn: Connection, node_id: str, enabled: bool, option: str) -> Effects:
        effects = Effects(wake=True)
        row, node = self._node_and_row(conn, node_id)
        target = SchedulingState.ENABLED if enabled else SchedulingState.DISABLED
        if row["scheduling_state"] == target:
            raise Conflict(
                f"Task scheduling on the compute node is already {target.value}.",
                code="NodeAlreadyInTargetSchedulingState",
            )
        db.change(conn, db.nodes, {"id": node_id}, {"scheduling_state": target.value})
        if not enabled:
            self._vacate(conn, node, option, "task scheduling was disabled on its compute node.", utcnow(), effects)
        elif row["state"] not in (NodeState.REBOOTING, NodeState.REIMAGING):  # those drain on their own
            node.draining = False
        return effects

    # ------------------------------------------------------------------ remove nodes
    async def remove_nodes(self, pool_key: str, node_ids: list[str], option: str) -> None:
        """Enter `resizing` before answering (the SDK polls for `steady`), lower the target, then remove."""
        async with self.lock:
            effects = await self.db.write(lambda conn: self._begin_removal(conn, pool_key, node_ids, option))
        await self._act(effects)
        self._spawn(self._remove_when_drained(pool_key, node_ids), "remove-nodes")

    def _begin_removal(self, conn: Connection, pool_key: str, node_ids: list[str], option: str) -> Effects:
        effects = Effects(wake=True)
        now = utcnow()
        pool = db.get(conn, db.pools, key=pool_key)
        if pool is None:
            raise NotFound("The specified pool does not exist.", code="PoolNotFound")
        nodes = [self.nodes.get(node_id) for node_id in node_ids]
        for node_id, node in zip(node_ids, nodes, strict=True):
            if node is None or node.pool_key != pool_key:
                raise NotFound(f"The compute node {node_id} is not in the pool.", code="NodeNotFound")
        if pool["allocation_state"] != AllocationState.STEADY:
            raise Conflict(
                "Nodes can be removed only while the pool's allocation state is steady.", code="PoolBeingResized"
            )
        changes = pool_rules.allocation(pool, AllocationState.RESIZING, now)
        changes["target_dedicated_nodes"] = max(0, pool["target_dedicated_nodes"] - len(node_ids))
        transition(conn, db.pools, {"key": pool_key}, pool, changes, bump_etag=True)
        self.state.pool_tracked({**pool, **changes})
        for node in nodes:
            assert node is not None, "checked above"
            self._vacate(conn, node, option, "its compute node was removed from the pool.", now, effects)
        return effects

    async def _remove_when_drained(self, pool_key: str, node_ids: list[str]) -> None:
        """taskcompletion and retaineddata: the nodes leave once their tasks have ended."""
        for node_id in node_ids:
            while (node := self.nodes.get(node_id)) is not None and node.used > 0:
                await asyncio.sleep(0.1)
            if node is not None:
                await self._remove_node(node)
        async with self.lock:
            await self.db.write(lambda conn: self._maybe_steady(conn, pool_key))

    # ------------------------------------------------------------------ spot preemption
    async def preempt_node(self, node_id: str) -> None:
        """Take a low-priority node back, as Azure does with spot capacity: it shows `preempted`, its tasks are
        requeued (each noted as hit by the fault `preempt` in its story), and after PREEMPTED_FOR it returns as a
        fresh node (files wiped, start task run again)."""
        async with self.lock:
            effects = await self.db.write(lambda conn: self._preempt_node(conn, node_id))
        await self._act(effects)
        self.timers.schedule(
            f"preempted:{node_id}",
            utcnow() + PREEMPTED_FOR,
            lambda: self._safely(self.backend.restart_node(node_id, wipe=True), f"return of preempted {node_id}"),
        )

    def _preempt_node(self, conn: Connection, node_id: str) -> Effects:
        effects = Effects(wake=True)
        now = utcnow()
        row, node = self._node_and_row(conn, node_id)
        if row["is_dedicated"]:
            raise Conflict(
                "Only low-priority (spot) nodes can be preempted; this node is dedicated.",
                code="OperationNotValidOnNode",
            )
        changes = node_rules.transition(row, NodeState.PREEMPTED, now)
        transition(conn, db.nodes, {"id": node_id}, row, changes)
        node.incarnation = changes["incarnation"]  # a fresh node: prep records of the old one no longer count
        node.up, node.preempted = False, True
        for task in db.tasks_in_states(conn, ON_NODE, node_id=node_id):  # in their stories, before their requeue
            story.note("fault", task, None, PREEMPT, {}, {}, now)
        self._vacate(conn, node, REQUEUE, "", now, effects)
        for step_id, ref in list(self.steps.items()):  # its start task, prep and release die with it
            if ref.node_id == node_id:
                self.state.step_off_node(node_id, step_id, effects, kill=True)
        return effects

    # ------------------------------------------------------------------ deallocate and start
    async def deallocate_node(self, node_id: str, option: str) -> None:
        """`deallocating` before answering (the SDK polls until the node leaves it); once its tasks are off
        (nodeDeallocateOption), its worker stops and it is `deallocated`, its files kept."""
        async with self.lock:
            effects = await self.db.write(lambda conn: self._begin_deallocate(conn, node_id, option))
        await self._act(effects)
        self._spawn(self._deallocate_when_drained(node_id), "deallocate-node")

    def _begin_deallocate(self, conn: Connection, node_id: str, option: str) -> Effects:
        effects = Effects(wake=True)
        now = utcnow()
        row, node = self._node_and_row(conn, node_id)
        transition(conn, db.nodes, {"id": node_id}, row, node_rules.transition(row, NodeState.DEALLOCATING, now))
        self._vacate(conn, node, option, "its compute node was deallocated.", now, effects)
        return effects

    async def _deallocate_when_drained(self, node_id: str) -> None:
        while (node := self.nodes.get(node_id)) is not None and node.used > 0:
            await asyncio.sleep(0.1)
        if node is None:
            return
        await self.backend.remove_node(node_id)  # its loss is reported: nothing of it is left to requeue

        def deallocated(conn: Connection) -> None:
            row = db.get(conn, db.nodes, id=node_id)
            if row is not None and row["state"] == NodeState.DEALLOCATING:
                changes = node_rules.transition(row, NodeState.DEALLOCATED, utcnow())
                transition(conn, db.nodes, {"id": node_id}, row, changes)

        async with self.lock:
            node.up = False
            await self.db.write(deallocated)

    async def start_node(self, node_id: str) -> None:
        """A deallocated node starts again: its worker comes up, and its start task runs."""
        async with self.lock:
            root = await self.db.write(lambda conn: self._begin_start(conn, node_id))
        await self.backend.add_node(node_id, root)

    def _begin_start(self, conn: Connection, node_id: str) -> str:
        row, _ = self._node_and_row(conn, node_id)
        if row["state"] != NodeState.DEALLOCATED:  # only a deallocated node starts (other edges are Kiln's own)
            raise node_rules.refusal(row["state"], NodeState.STARTING)
        transition(conn, db.nodes, {"id": node_id}, row, node_rules.transition(row, NodeState.STARTING, utcnow()))
        return row["root_dir"]

    def _node_and_row(self, conn: Connection, node_id: str) -> tuple[dict[str, Any], NodeSlots]:
        row, node = db.get(conn, db.nodes, id=node_id), self.nodes.get(node_id)
        if row is None or node is None:
            raise NotFound("The specified compute node does not exist.", code="NodeNotFound")
        return row, node

    # ------------------------------------------------------------------ stop resize
    async def stop_resize(self, pool_key: str) -> None:
        """A resizing pool goes `stopping`; the resize adds no more nodes and the pool settles at those it has."""
        async with self.lock:
            await self.db.write(lambda conn: self._stop_resize(conn, pool_key))

    def _stop_resize(self, conn: Connection, pool_key: str) -> None:
        pool = db.get(conn, db.pools, key=pool_key)
        if pool is None:
            raise NotFound("The specified pool does not exist.", code="PoolNotFound")
        if pool["allocation_state"] != AllocationState.RESIZING:
            return  # nothing to stop: a steady pool stays as it is
        changes = pool_rules.allocation(pool, AllocationState.STOPPING, utcnow())
        transition(conn, db.pools, {"key": pool_key}, pool, changes, bump_etag=True)
        self.state.pool_tracked({**pool, **changes})
        self._maybe_steady(conn, pool_key)

    def _stopping(self, pool_key: str) -> bool:
        pool = self.pools.get(pool_key)
        return pool is not None and pool["allocation_state"] == AllocationState.STOPPING
