"""What the parts of `Scheduler` (engine.py) share through `self`, declared once so the type checker sees it.

`Scheduler` is built from mixins that read each other's state and call each other's methods. Each mixin
inherits `SchedulerParts`, which only declares: the attributes are set by `Scheduler.__init__` (and
`MultiInstance._init_multi_instance`), and the methods, declared under TYPE_CHECKING, live in the parts
named beside them. Nothing here exists at run time beyond the empty class.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from kiln.compute.protocol import AppPackage, ComputeBackend, StepResult
    from kiln.core.job import DisableTasks, JobState
    from kiln.scheduler import steps as step_builder
    from kiln.scheduler.control import ControlState
    from kiln.scheduler.job_control import Check
    from kiln.scheduler.priority import Chooser
    from kiln.scheduler.slots import NodeSlots
    from kiln.scheduler.state import Effects, JobEntry, StepRef
    from kiln.scheduler.timers import Timers
    from kiln.store.database import Database


class SchedulerParts:
    """The base of every mixin of `Scheduler`: its shared state and cross-part methods, typed."""

    db: Database
    backend: ComputeBackend
    state: ControlState
    data_dir: Path
    lock: asyncio.Lock
    schedule_lock: asyncio.Lock
    nodes: dict[str, NodeSlots]
    pools: dict[str, dict[str, Any]]
    jobs: dict[str, JobEntry]
    preps: dict[tuple[str, str], dict[str, Any]]
    waiting: dict[tuple[str, str], list[int]]
    steps: dict[str, StepRef]
    node_packages: dict[str, tuple[AppPackage, ...]]
    timers: Timers
    instance_counts: dict[int, tuple[str, int]]
    subtask_nodes: dict[int, list[str]]
    _sweep_due: datetime | None
    _graphs_pending: set[str]

    if TYPE_CHECKING:
        # engine.Scheduler
        def wake(self) -> None: ...
        def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None: ...
        async def _act(self, effects: Effects) -> None: ...
        async def _safely(self, coro: Coroutine[Any, Any, Any], what: str) -> None: ...
        def _may_run(self, entry: JobEntry, node: NodeSlots) -> bool: ...
        def _placement(self, node: NodeSlots) -> step_builder.Placement: ...
        def _ensure_prep(
            self, conn: Connection, entry: JobEntry, node: NodeSlots, now: datetime, effects: Effects
        ) -> dict[str, Any]: ...
        @staticmethod
        def _finished_task_rows(conn: Connection, refs: list[StepRef]) -> dict[int, dict[str, Any]]: ...
        def _task_finished(
            self,
            conn: Connection,
            ref: StepRef,
            task: dict[str, Any] | None,
            result: StepResult,
            now: datetime,
            effects: Effects,
        ) -> None: ...
        def _requeue_in_memory(self, task: dict[str, Any]) -> None: ...
        def _carry_out(self, conn: Connection, effects: Effects, now: datetime) -> None: ...
        def _end_instances(self, conn: Connection, seq: int, now: datetime, effects: Effects) -> None: ...
        def _take_off_node(self, conn: Connection, task: dict[str, Any], now: datetime, effects: Effects) -> None: ...
        def _end_on_node(
            self, conn: Connection, task: dict[str, Any], failure: dict[str, Any], now: datetime, effects: Effects
        ) -> None: ...
        def job_created(self, job: dict[str, Any], manager: dict[str, Any] | None = None) -> None: ...

        # ahead.SendAhead
        def _call_back(
            self,
            conn: Connection,
            node: NodeSlots,
            effects: Effects,
            *,
            job_key: str | None = None,
            requeue: bool = True,
            kill: bool = True,
        ) -> None: ...
        def _call_back_job(self, conn: Connection, job_key: str, effects: Effects, *, requeue: bool) -> None: ...
        def _move_attempts_on(self, conn: Connection, taken_back: Iterable[StepRef]) -> None: ...
        async def _withdraw_from(self, node_id: str, step_ids: list[str]) -> None: ...
        def _count_unseen_runs(self, conn: Connection, now: datetime, node_id: str | None = None) -> None: ...

        # auto_pools.AutoPools
        async def delete_auto_pool(self, pool_id: str | None, auto: Mapping[str, Any] | None) -> None: ...

        # job_control.JobControl
        def _disable_job(self, conn: Connection, job_key: str, option: DisableTasks, check: Check) -> Effects: ...
        def _release_slots(self, task: dict[str, Any], effects: Effects) -> None: ...
        def _settle_disabling(self, conn: Connection, job_keys: Iterable[str], now: datetime) -> None: ...
        def _disabling_jobs(self) -> list[str]: ...

        # job_end.JobEnding
        async def terminate_job(self, job_key: str, reason: str) -> None: ...
        async def delete_job(self, job_key: str) -> None: ...
        def _end_job(self, conn: Connection, job_key: str, to: JobState, reason: str | None) -> Effects: ...
        def _run_release(
            self,
            conn: Connection,
            entry: JobEntry,
            node: NodeSlots,
            record: dict[str, Any],
            now: datetime,
            effects: Effects,
        ) -> None: ...
        def _finish_job_if_released(self, conn: Connection, job_key: str, now: datetime, effects: Effects) -> None: ...
        async def _check_all_complete(self, job_key: str) -> None: ...

        # multi_instance.MultiInstance
        def _chooser(self, pool: dict[str, Any], fill: str) -> Chooser: ...
        def _end_instances(self, conn: Connection, seq: int, now: datetime, effects: Effects) -> None: ...
        def _instances_lost(self, conn: Connection, node_id: str, now: datetime, effects: Effects) -> None: ...
        def _subtask_nodes_terminated(
            self, conn: Connection, node_id: str, failure: dict[str, Any], now: datetime, effects: Effects
        ) -> None: ...

        # node_ops.NodeOperations
        async def create_pool(self, pool: dict[str, Any]) -> None: ...
        async def delete_pool(self, pool_key: str) -> None: ...
        def _members(self, pool_key: str, dedicated: bool | None = None) -> list[NodeSlots]: ...
        async def resize_pool(
            self, pool_key: str, dedicated: int, low_priority: int, option: str = "requeue"
        ) -> None: ...
        def _node_ready(self, conn: Connection, node: NodeSlots, now: datetime, effects: Effects) -> None: ...
        async def _remove_node(self, node: NodeSlots) -> None: ...
        def _maybe_steady(self, conn: Connection, pool_key: str) -> None: ...

        # node_control.NodeControl
        def _stopping(self, pool_key: str) -> bool: ...
        def _vacate(
            self, conn: Connection, node: NodeSlots, option: str, why: str, now: datetime, effects: Effects
        ) -> None: ...
        async def _remove_when_drained(self, pool_key: str, node_ids: list[str]) -> None: ...

        # start_tasks.StartTasks
        def _boot(
            self, conn: Connection, node: NodeSlots, row: dict[str, Any], now: datetime, effects: Effects
        ) -> None: ...

        # retention.Retention
