"""Autoscale pools (batch-semantics-2 §4): sample their metrics, evaluate their formulas on a timer, resize them.

Samples are taken every period (30 s; KILN_AUTOSCALE_SAMPLE_PERIOD for tests) and kept in memory only: after
a restart a pool has no history, as a new pool has none. A shrink honours `$NodeDeallocationOption`:
`taskcompletion` and `retaineddata` let the chosen nodes finish their tasks (they take no new ones) before
they leave; `requeue` and `terminate` remove them at once through the pool's resize, which requeues their
tasks, once `terminate` has ended them (failed, "TaskEnded").
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from kiln.autoscale.evaluate import Observations, Run, compile_formula, evaluate
from kiln.autoscale.samples import NODE_METRICS, PERIOD, History
from kiln.autoscale.syntax import Formula
from kiln.core.pool import AllocationState, PoolState
from kiln.scheduler.parts import SchedulerParts
from kiln.store import autoscale as autoscale_rows
from kiln.store import rows as db
from kiln.wire.times import format_time, parse_duration
from kiln.wire.times import now as utcnow

log = logging.getLogger("kiln.autoscale")


@dataclass(slots=True)
class Autoscaled:
    """An autoscale pool's formula and timer."""

    formula: Formula
    interval: timedelta
    enabled_at: datetime | None  #: the latest enable request, for the 30 s gap between two


class Autoscaling(SchedulerParts):
    """Mixed into Scheduler: autoscale pools by key, their sample histories, and the sampling loop."""

    def _init_autoscale(self) -> None:
        self.autoscaled: dict[str, Autoscaled] = {}
        self.histories: dict[str, History] = {}
        self.sample_period = parse_duration(os.environ.get("KILN_AUTOSCALE_SAMPLE_PERIOD", "PT30S")) or PERIOD

    async def recover_autoscale(self) -> None:
        """After a start: every autoscale pool evaluates one interval from now; sampling starts afresh."""
        for key, pool in self.pools.items():
            spec = pool["spec"]
            if spec.get("enableAutoScale"):
                interval = parse_duration(spec["autoScaleEvaluationInterval"])
                self.autoscale_enabled(key, compile_formula(spec["autoScaleFormula"]), interval)
        self._spawn(self._sample_forever(), "autoscale-samples")

    # ------------------------------------------------------------------ enable, disable, evaluate
    def autoscale_enabled(
        self, pool_key: str, formula: Formula, interval: timedelta, *, arm: bool = True, request: bool = False
    ) -> None:
        """Remember the formula; `arm`: (re)start the timer one interval from now (a new interval restarts it);
        `request`: an enable request, which starts the 30 s before the next one is allowed."""
        previous = self.autoscaled.get(pool_key)
        self.autoscaled[pool_key] = Autoscaled(formula, interval, utcnow() if request else None)
        self.histories.setdefault(pool_key, History(self.sample_period))
        if arm or previous is None:
            self._arm(pool_key, interval)

    def autoscale_disabled(self, pool_key: str, *, pool_deleted: bool = False) -> None:
        """No more evaluations; the samples stay for a later enable, unless the pool is going away."""
        self.autoscaled.pop(pool_key, None)
        self.timers.cancel(_timer_key(pool_key))
        if pool_deleted:
            self.histories.pop(pool_key, None)

    def last_enable(self, pool_key: str) -> datetime | None:
        entry = self.autoscaled.get(pool_key)
        return entry.enabled_at if entry is not None else None

    def evaluate_autoscale(self, pool_key: str, formula: Formula) -> Run:
        """One evaluation on the pool's current observations and history; applies nothing."""
        history = self.histories.get(pool_key) or History(self.sample_period)
        return evaluate(formula, self.observations(pool_key), history)

    def first_autoscale_run(self, formula: Formula) -> Run:
        """A new pool's: no nodes, no targets, no history."""
        return evaluate(formula, Observations(now=utcnow(), target_dedicated=0), History(self.sample_period))

    async def run_autoscale(self, pool_key: str) -> Run | None:
        """Evaluate the pool's formula, record the run on the pool, and resize it if its targets changed."""
        entry, pool = self.autoscaled.get(pool_key), self.pools.get(pool_key)
        if entry is None or pool is None or pool["state"] != PoolState.ACTIVE:
            return None
        run = self.evaluate_autoscale(pool_key, entry.formula)
        doc = run.doc(format_time)
        async with self.lock:
            await self.db.write(lambda conn: _record_run(conn, pool_key, doc))
            pool = self.pools.get(pool_key)
            if pool is not None:
                pool["spec"] = {**pool["spec"], "autoScaleRun": doc}
        await self._apply(pool_key, run)
        return run

    def observations(self, pool_key: str) -> Observations:
        pool = self.pools[pool_key]
        members = self._members(pool_key)
        return Observations(
            now=utcnow(),
            target_dedicated=pool["target_dedicated_nodes"],
            target_low_priority=pool["target_low_priority_nodes"],
            current_dedicated=len(self._members(pool_key, True)),
            current_low_priority=len(self._members(pool_key, False)),  # preempted ones too, as Batch counts them
            preempted=sum(1 for n in members if n.preempted),
            usable=sum(1 for n in members if n.up and not n.draining),
            slots_per_node=pool["task_slots_per_node"],
        )

    def _arm(self, pool_key: str, interval: timedelta) -> None:
        self.timers.schedule(_timer_key(pool_key), utcnow() + interval, lambda: self._on_timer(pool_key))

    async def _on_timer(self, pool_key: str) -> None:
        entry = self.autoscaled.get(pool_key)
        if entry is None:
            return
        self._arm(pool_key, entry.interval)
        await self.run_autoscale(pool_key)

    # ------------------------------------------------------------------ applying targets
    async def _apply(self, pool_key: str, run: Run) -> None:
        """A steady pool whose targets changed resizes, honouring $NodeDeallocationOption for the nodes that
        leave (NodeOperations.resize_pool); one still resizing waits for the next evaluation."""
        pool = self.pools.get(pool_key)
        if (
            run.error is not None
            or pool is None
            or pool["allocation_state"] != AllocationState.STEADY
            or (run.target_dedicated, run.target_low_priority)
            == (pool["target_dedicated_nodes"], pool["target_low_priority_nodes"])
        ):
            return
        await self.resize_pool(pool_key, run.target_dedicated, run.target_low_priority, run.deallocation_option.value)

    # ------------------------------------------------------------------ sampling
    async def _sample_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sample_period.total_seconds())
            try:
                await self.sample_autoscale_pools()
            except Exception:  # a failed sample is a missing sample, as in Batch
                log.exception("autoscale sampling failed")

    async def sample_autoscale_pools(self) -> None:
        """One sample of every autoscale pool: its task counts from the store and its nodes' measured usage."""
        keys = [key for key in self.autoscaled if key in self.pools]
        if not keys:
            return
        at = utcnow()
        counts = await self.db.read(lambda conn: {k: autoscale_rows.pool_task_counts(conn, k) for k in keys})
        roots = {n.node_id: n.root for n in self.nodes.values() if n.pool_key in keys and n.up}
        usage = await self.backend.measure_usage(roots)  # on the nodes' hosts
        for key in keys:
            members = self._members(key)
            nodes = [usage[n.node_id] for n in members if n.node_id in usage]
            preempted = sum(1 for n in members if n.preempted)
            values = {**self._task_metrics(key, counts[key]), **_node_metrics(nodes, self.sample_period, preempted)}
            self.histories.setdefault(key, History(self.sample_period)).record(at, values)

    def _task_metrics(self, pool_key: str, counts: dict[str, int]) -> dict[str, float]:
        """$ActiveTasks leaves out the tasks that wait for their dependencies (the scheduler knows which)."""
        blocked = sum(
            sum(1 for seq in entry.graph.waiters if entry.graph.waiting(seq))
            for entry in self.jobs.values()
            if entry.graph is not None and entry.row["pool_key"] == pool_key
        )
        active = max(0, counts.get("active", 0) - blocked)
        running = counts.get("running", 0)
        return {
            "$ActiveTasks": active,
            "$RunningTasks": running,
            "$PendingTasks": active + running,
            "$SucceededTasks": counts.get("completed:success", 0),
            "$FailedTasks": counts.get("completed:failure", 0),
        }


def _node_metrics(nodes: list[dict[str, float]], period: timedelta, preempted: int = 0) -> dict[str, float]:
    """Per sample: CPU, memory and disk use averaged over the nodes (those measured: up); I/O, network and wall
    clock summed over them; and the pool's preempted nodes."""
    averaged = ("$CPUPercent", "$MemoryBytes", "$DiskBytes")
    values: dict[str, float] = {}
    for metric in NODE_METRICS:
        total = sum(node.get(metric, 0.0) for node in nodes)
        values[metric] = total / len(nodes) if metric in averaged and nodes else total
    values["$WallClockSeconds"] = period.total_seconds() * len(nodes)
    values["$SampleNodeCount"] = float(len(nodes))
    values["$PreemptedNodeCount"] = float(preempted)
    return values


def _record_run(conn: Connection, pool_key: str, doc: dict[str, Any]) -> None:
    """autoScaleRun is part of the pool's document; recording it is not a change of the pool (same ETag)."""
    row = db.get(conn, db.pools, key=pool_key)
    if row is not None:
        db.change(conn, db.pools, {"key": pool_key}, {"spec": {**row["spec"], "autoScaleRun": doc}})


def _timer_key(pool_key: str) -> str:
    return f"autoscale:{pool_key}"
