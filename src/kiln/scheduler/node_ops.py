"""Pools and nodes: sizing, node loss and return, reboot and reimage."""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from kiln import story, undo
from kiln.core import node as node_rules
from kiln.core import pool as pool_rules
from kiln.core import task as task_rules
from kiln.core.node import NodeState, SchedulingState
from kiln.core.pool import AllocationState
from kiln.scheduler.batching import GroupCommit
from kiln.scheduler.parts import SchedulerParts
from kiln.scheduler.slots import NodeSlots
from kiln.scheduler.state import ON_NODE, Effects, transition
from kiln.store import rows as db
from kiln.wire.times import now as utcnow

log = logging.getLogger("kiln.scheduler")

#: A resize starts its new nodes this many at a time, one transaction each; a stop resize takes effect between.
RESIZE_CHUNK = 100


class NodeOperations(SchedulerParts):
    """Mixed into Scheduler; uses its lock, store, backend and in-memory maps."""

    #: the most nodes the server runs in all its pools (None: no limit); set by the server (KILN_MAX_NODES)
    max_nodes: int | None = None

    # ------------------------------------------------------------------ pools and nodes
    async def create_pool(self, pool: dict[str, Any]) -> None:
        """The pool row is stored by the caller's transaction; its first resize runs in the background."""
        async with self.lock:
            self.state.pool_tracked(pool)
        self._spawn(self._resize(pool["key"]), "resize")

    async def resize_pool(self, pool_key: str, dedicated: int, low_priority: int, option: str = "requeue") -> None:
        """Enter `resizing` before answering (the SDK's poller waits for `steady`), then resize in the background;
        `option` (nodeDeallocationOption) says what becomes of the tasks of nodes that leave."""
        async with self.lock:
            self.state.pool_tracked(
                await self.db.write(lambda conn: self._begin_resize(conn, pool_key, dedicated, low_priority))
            )
        self._spawn(self._resize(pool_key, option), "resize")

    def _begin_resize(self, conn: Connection, pool_key: str, dedicated: int, low_priority: int) -> dict[str, Any]:
        from kiln.errors import NotFound

        pool = db.get(conn, db.pools, key=pool_key)
        if pool is None:
            raise NotFound("The specified pool does not exist.", code="PoolNotFound")
        changes = pool_rules.allocation(pool, AllocationState.RESIZING, utcnow())
        changes.update(target_dedicated_nodes=dedicated, target_low_priority_nodes=low_priority)
        transition(conn, db.pools, {"key": pool_key}, pool, changes, bump_etag=True)
        undo.update(pool, changes)
        return pool

    async def _resize(self, pool_key: str, option: str = "requeue") -> None:
        """Grow with new worker processes, or shrink by removing the least busy nodes, dedicated and
        low-priority (spot) nodes each towards their own target."""
        async with self.lock:
            pool = self.pools[pool_key]
            added: list[tuple[dict[str, Any], NodeSlots]] = []
            victims: list[NodeSlots] = []
            room = sys.maxsize if self.max_nodes is None else self.max_nodes - len(self.nodes)
            for dedicated, target in (
                (True, pool["target_dedicated_nodes"]),
                (False, pool["target_low_priority_nodes"]),
            ):
                current = self._members(pool_key, dedicated)
                grown = min(max(0, target - len(current)), max(0, room))  # dedicated first, as far as room goes
                room -= grown
                added += [self._new_node(pool, dedicated) for _ in range(grown)]
                victims += sorted(current, key=lambda n: (n.used, n.node_id))[: max(0, len(current) - target)]
            await self.db.write(lambda conn: db.insert_rows(conn, db.nodes, [row for row, _ in added]))
            for _, slots in added:
                self.state.node_tracked(slots)
        for first in range(0, len(added), RESIZE_CHUNK):
            if self._stopping(pool_key):  # stop resize: the nodes not started yet are not added
                await self._forget_unstarted([r for r, _ in added[first:]])
                break
            chunk = [row for row, _ in added[first : first + RESIZE_CHUNK]]
            async with self.lock:
                for row in chunk:
                    await self.backend.add_node(row["id"], row["root_dir"])
                await self.db.write(functools.partial(self._nodes_starting, rows=chunk))
        if victims:
            async with self.lock:
                effects = await self.db.write(lambda conn: self._vacate_all(conn, victims, option))
            await self._act(effects)
        await self._remove_when_drained(pool_key, [node.node_id for node in victims])

    @staticmethod
    def _nodes_starting(conn: Connection, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            transition(conn, db.nodes, {"id": row["id"]}, row, node_rules.transition(row, NodeState.STARTING, utcnow()))

    def _vacate_all(self, conn: Connection, nodes: list[NodeSlots], option: str) -> Effects:
        effects = Effects(wake=True)
        for node in nodes:
            self._vacate(conn, node, option, "its compute node left the pool.", utcnow(), effects)
        return effects

    def _members(self, pool_key: str, dedicated: bool | None = None) -> list[NodeSlots]:
        """The pool's nodes: all of them, or only its dedicated ones, or only its low-priority ones."""
        return [
            n
            for n in self.nodes.values()
            if n.pool_key == pool_key and (dedicated is None or node_rules.is_dedicated(n.node_id) == dedicated)
        ]

    def _new_node(self, pool: dict[str, Any], dedicated: bool = True) -> tuple[dict[str, Any], NodeSlots]:
        suffix = node_rules.DEDICATED_SUFFIX if dedicated else node_rules.LOW_PRIORITY_SUFFIX
        node_id = f"tvmps_{uuid.uuid4().hex[:24]}{suffix}"
        root = self.data_dir / "nodes" / node_id
        now = utcnow()
        row = {
            "id": node_id,
            "pool_key": pool["key"],
            "state": NodeState.CREATING.value,
            "scheduling_state": "enabled",
            "state_transition_time": now,
            "allocation_time": now,
            "incarnation": 0,
            "root_dir": str(root),
            "total_tasks_run": 0,
            "total_tasks_succeeded": 0,
            "running_tasks": 0,
            "running_slots": 0,
            "start_task": pool["spec"].get("startTask"),
            "is_dedicated": dedicated,
        }
        return row, NodeSlots(node_id, pool["key"], pool["task_slots_per_node"], str(root))

    async def _remove_node(self, node: NodeSlots) -> None:
        """Node leaves the pool: requeue its tasks, stop its worker, forget it (prep records stay listed).

        The worker is stopped outside the lock: the backend reports the loss, and that report takes the lock.
        """
        async with self.lock:
            effects = await self.db.write(lambda conn: self._lose_node(conn, node.node_id, remove=True))
            self.state.node_forgotten(node.node_id)
        await self.backend.remove_node(node.node_id)
        await self._act(effects)

    async def _forget_unstarted(self, rows: list[dict[str, Any]]) -> None:
        async with self.lock:

            def remove(conn: Connection) -> None:
                for row in rows:
                    db.remove_node(conn, row["id"])

            await self.db.write(remove)
            for row in rows:
                self.state.node_forgotten(row["id"])

    def _maybe_steady(self, conn: Connection, pool_key: str) -> None:
        """A resize is done once the pool has its target number of nodes (any number, once stopped; no more,
        once the server holds max_nodes), every one booted; resizeErrors say why it ended short."""
        pool = self.pools.get(pool_key)
        if pool is None or pool["allocation_state"] not in (AllocationState.RESIZING, AllocationState.STOPPING):
            return
        stopped = pool["allocation_state"] == AllocationState.STOPPING
        members = {n.node_id for n in self.nodes.values() if n.pool_key == pool_key}
        dedicated_count = sum(map(node_rules.is_dedicated, members))
        dedicated = (dedicated_count, pool["target_dedicated_nodes"])
        low_priority = (len(members) - dedicated_count, pool["target_low_priority_nodes"])
        full = self.max_nodes is not None and len(self.nodes) >= self.max_nodes  # no node more to be had
        reached = dedicated[0] == dedicated[1] and low_priority[0] == low_priority[1]
        capped = full and dedicated[0] <= dedicated[1] and low_priority[0] <= low_priority[1]
        if not (stopped or reached or capped):
            return
        if not db.pool_has_node_outside(conn, pool_key, node_rules.SETTLED, members):
            errors = pool_rules.resize_errors(
                stopped=stopped, dedicated=dedicated, low_priority=low_priority, max_nodes=self.max_nodes
            )
            changes = pool_rules.allocation(pool, AllocationState.STEADY, utcnow(), errors=errors)
            transition(conn, db.pools, {"key": pool_key}, pool, changes, bump_etag=True)
            undo.update(pool, changes)

    async def delete_pool(self, pool_key: str) -> None:
        async with self.lock:

            def mark(conn: Connection) -> dict[str, Any]:
                from kiln.errors import NotFound

                pool = db.get(conn, db.pools, key=pool_key)
                if pool is None:
                    raise NotFound("The specified pool does not exist.", code="PoolNotFound")
                changes = pool_rules.delete(pool, utcnow())
                transition(conn, db.pools, {"key": pool_key}, pool, changes, bump_etag=True)
                return {**pool, **changes}

            self.state.pool_tracked(await self.db.write(mark))
        self._spawn(self._finish_pool_delete(pool_key), "pool-delete")

    async def _finish_pool_delete(self, pool_key: str) -> None:
        for node in [n for n in self.nodes.values() if n.pool_key == pool_key]:
            await self._remove_node(node)
        async with self.lock:
            await self.db.write(
                lambda conn: (db.remove(conn, db.pools, key=pool_key), db.remove(conn, db.nodes, pool_key=pool_key))
            )
            self.state.pool_forgotten(pool_key)

    # ------------------------------------------------------------------ node events
    @functools.cached_property
    def _arrivals(self) -> GroupCommit[tuple[str, str]]:
        return GroupCommit(self._nodes_up, "node-arrivals")

    @functools.cached_property
    def _start_failures(self) -> GroupCommit[tuple[str, str, str]]:
        return GroupCommit(self._nodes_failed, "node-start-failures")

    async def _on_node_up(self, node_id: str) -> None:
        """Applied with the other nodes that came up meanwhile (scheduler.batching), each under its own stimulus."""
        await self._arrivals.submit((node_id, story.stimulus.get()))

    async def _nodes_up(self, arrivals: list[tuple[str, str]]) -> None:
        async with self.lock:
            effects = await self.db.write(lambda conn: self._apply_arrivals(conn, arrivals))
        await self._act(effects)

    def _apply_arrivals(self, conn: Connection, arrivals: list[tuple[str, str]]) -> Effects:
        effects = Effects(wake=True)
        causes: dict[str, str] = {}  #: pool key -> the stimulus of its last arrival, which may settle its resize
        for node_id, cause in arrivals:
            node = self.nodes.get(node_id)
            if node is None:
                continue
            with story.caused_by(cause):
                self._node_up(conn, node, effects)
            causes[node.pool_key] = cause
        self._settle_resizes(conn, causes)
        return effects

    def _settle_resizes(self, conn: Connection, causes: dict[str, str]) -> None:
        """Once per pool a batch touched, rather than once per node: the look costs a read of the pool's nodes."""
        for pool_key, cause in causes.items():
            with story.caused_by(cause):
                self._maybe_steady(conn, pool_key)

    def _node_up(self, conn: Connection, node: NodeSlots, effects: Effects) -> None:
        """The node's worker answers: a fresh start (its tasks were requeued when it went down), then its
        start task, if its pool has one."""
        now = utcnow()
        row = db.get(conn, db.nodes, id=node.node_id)
        if row is None or row["state"] in node_rules.BOOTED:
            return
        if row["state"] != NodeState.STARTING:
            changes = node_rules.transition(row, NodeState.STARTING, now)
            transition(conn, db.nodes, {"id": node.node_id}, row, changes)
            undo.update(row, changes)
        node.draining = row["scheduling_state"] == SchedulingState.DISABLED  # disabled scheduling outlives a reboot
        node.preempted = False  # a preempted node is back: starting
        node.release_all()
        self._boot(conn, node, row, now, effects)

    def _node_ready(self, conn: Connection, node: NodeSlots, now: datetime, effects: Effects) -> None:
        """The node takes tasks: its start task succeeded, or does not hold it back."""
        self.state.node_ready(node.node_id, now, effects)
        self._carry_out(conn, effects, now)

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
        self._count_unseen_runs(conn, now, node_id)  # those that started unseen: a run each
        self._instances_lost(conn, node_id, now, effects)
        on_node = db.tasks_in_states(conn, ON_NODE, node_id=node_id)
        self._move_attempts_on(conn, self.state.node_lost(node_id, on_node, now, effects))
        effects.write_batched(conn, counters=False)
        self._settle_disabling(conn, self._disabling_jobs(), now)
        row = db.get(conn, db.nodes, id=node_id)
        if remove:
            db.remove_node(conn, node_id)
            for entry in list(self.jobs.values()):
                self._finish_job_if_released(conn, entry.key, now, effects)
        elif row is not None and row["state"] in (NodeState.STARTING, *node_rules.BOOTED):
            transition(conn, db.nodes, {"id": node_id}, row, node_rules.transition(row, NodeState.UNKNOWN, now))
        return effects

    async def _on_node_failed(self, node_id: str, message: str) -> None:
        """The node could not start (its host refused it, or did not start it in time): unusable, with errors
        saying why; the pool's resize counts it as settled. Nothing retries it. Applied in batches, as arrivals
        are: a pool beyond what its hosts hold fails hundreds at once."""
        await self._start_failures.submit((node_id, message, f"node {node_id} failed"))

    async def _nodes_failed(self, failures: list[tuple[str, str, str]]) -> None:
        async with self.lock:
            await self.db.write(lambda conn: self._apply_start_failures(conn, failures))

    def _apply_start_failures(self, conn: Connection, failures: list[tuple[str, str, str]]) -> None:
        causes: dict[str, str] = {}
        for node_id, message, cause in failures:
            node = self.nodes.get(node_id)
            row = db.get(conn, db.nodes, id=node_id)
            if node is None or row is None or row["state"] not in (NodeState.CREATING, NodeState.STARTING):
                continue
            errors = node_rules.start_failed_errors(message)
            with story.caused_by(cause):
                transition(
                    conn,
                    db.nodes,
                    {"id": node_id},
                    row,
                    node_rules.transition(row, NodeState.UNUSABLE, utcnow(), errors=errors),
                )
            causes[node.pool_key] = cause
        self._settle_resizes(conn, causes)

    # ------------------------------------------------------------------ reboot and reimage
    async def restart_node(self, node_id: str, option: str, *, reimage: bool) -> None:
        """Reboot or reimage: the node enters the transient state before the API answers (the SDK polls it)."""
        async with self.lock:
            effects = await self.db.write(lambda conn: self._begin_restart(conn, node_id, option, reimage))
        await self._act(effects)
        # requeue: the restart's node-down takes its tasks off and requeues them; the others wait for them to end
        self._spawn(self._restart_when_drained(node_id, reimage, drain=option != "requeue"), "restart-node")

    def _begin_restart(self, conn: Connection, node_id: str, option: str, reimage: bool) -> Effects:
        from kiln.errors import NotFound

        effects = Effects(wake=True)
        now = utcnow()
        row, node = db.get(conn, db.nodes, id=node_id), self.nodes.get(node_id)
        if row is None or node is None:
            raise NotFound("The specified compute node does not exist.", code="NodeNotFound")
        changes = node_rules.transition(row, NodeState.REIMAGING if reimage else NodeState.REBOOTING, now)
        pool = db.get(conn, db.pools, key=node.pool_key) or self.pools[node.pool_key]
        changes["start_task"] = pool["spec"].get("startTask")  # a pool update reaches the node now
        transition(conn, db.nodes, {"id": node_id}, row, changes)
        drain = option not in ("requeue", "terminate")  # those that started in the moment before finish
        reimaged_as = changes["incarnation"] if reimage else None
        moved = self.state.node_restarting(node_id, reimaged_as=reimaged_as, drain=drain, now=now, effects=effects)
        self._move_attempts_on(conn, moved)
        effects.write_records(conn)
        if option == "terminate":
            failure = task_rules.ended_by("the compute node was rebooted or reimaged.")
            self._subtask_nodes_terminated(conn, node_id, failure, now, effects)
            for task in db.tasks_in_states(conn, ON_NODE, node_id=node_id):
                self._end_on_node(conn, task, failure, now, effects)
            self._settle_disabling(conn, self._disabling_jobs(), now)
        return effects

    async def _restart_when_drained(self, node_id: str, reimage: bool, *, drain: bool) -> None:
        """taskcompletion/retaineddata (drain): wait for running tasks to finish (no new ones start), then restart."""
        while (
            drain
            and (node := self.nodes.get(node_id)) is not None
            and (node.used or node.withdrawing)
            and node.draining
        ):
            await asyncio.sleep(0.1)
        if node_id in self.nodes:
            await self.backend.restart_node(node_id, wipe=reimage)
