"""Replay a workload against a formula on a simulated clock: no processes, no server, seconds for a day.

The clock ticks once per sample period. At each tick: tasks that have run their duration complete, drained
idle nodes leave, arrivals join the queue, nodes whose start delay has passed come up, waiting tasks start
(oldest first, one slot each), a sample is taken, and, every interval from time 0, the formula is evaluated
by the same evaluator the server uses and its targets applied as the server applies them: growing adds
nodes (up after `node_start`), shrinking takes the least busy nodes and honours `$NodeDeallocationOption`
(requeue: their tasks start again later; terminate: they fail; taskcompletion/retaineddata: the nodes take
no new tasks and leave once idle). Tasks placed after the evaluation start in the same tick.

Simulated node metrics: `$CPUPercent` is the share of busy slots; `$SampleNodeCount` the nodes up; the other
node metrics read 0.
"""

from __future__ import annotations

import csv
import io
import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from kiln.autoscale.evaluate import Observations, Run, evaluate
from kiln.autoscale.samples import NODE_METRICS, PERIOD, History
from kiln.autoscale.syntax import Formula
from kiln.autoscale.values import DeallocationOption

START = datetime(2025, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Arrival:
    at: float  #: seconds from the start
    duration: float  #: seconds the task runs


def load_workload(text: str) -> list[Arrival]:
    """A JSON list of {"arrival": s, "duration": s}, or CSV with the columns arrival,duration (seconds)."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        rows = json.loads(text)
    else:
        rows = list(csv.DictReader(io.StringIO(stripped)))
    return sorted((Arrival(float(row["arrival"]), float(row["duration"])) for row in rows), key=lambda a: a.at)


@dataclass(slots=True, eq=False)
class _Task:
    waiting_since: float
    duration: float
    ends: float = 0.0


@dataclass(slots=True, eq=False)
class _Node:
    up_at: float
    slots: int
    running: list[_Task] = field(default_factory=list)
    draining: bool = False


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One evaluation, as `kiln autoscale simulate` prints it."""

    at: float
    active: int
    running: int
    run: Run
    nodes: int  #: nodes in the pool after the run was applied (up or starting)


@dataclass(frozen=True, slots=True)
class Tick:
    """One sample period, for plotting: the sample taken, then the targets in force and the nodes after it."""

    at: float  #: seconds from the start
    samples: Mapping[str, float]
    target: int  #: $TargetDedicatedNodes
    nodes: int


@dataclass(frozen=True, slots=True)
class Totals:
    node_hours: float
    task_wait_hours: float
    peak_nodes: int
    completed: int
    failed: int
    requeued: int
    seconds: float  #: simulated time


@dataclass
class Simulation:
    formula: Formula
    workload: list[Arrival]
    interval: timedelta = timedelta(minutes=15)
    slots_per_node: int = 1
    node_start: timedelta = timedelta(0)
    period: timedelta = PERIOD
    until: timedelta = timedelta(days=7)  #: stop here even if work or nodes remain
    timeline: list[Tick] = field(default_factory=list)

    def run(self) -> tuple[list[Evaluation], Totals]:
        step, every = self.period.total_seconds(), self.interval.total_seconds()
        history, arrivals = History(self.period), deque(self.workload)
        queue: deque[_Task] = deque()
        nodes: list[_Node] = []
        evaluations: list[Evaluation] = []
        target = low = 0
        counts = {"completed": 0, "failed": 0, "requeued": 0}
        waited = node_seconds = 0.0
        peak, now, next_evaluation = 0, 0.0, 0.0
        while now <= self.until.total_seconds():
            for node in nodes:
                for task in [t for t in node.running if t.ends <= now]:
                    node.running.remove(task)
                    counts["completed"] += 1
            nodes = [n for n in nodes if not (n.draining and not n.running)]
            while arrivals and arrivals[0].at <= now:
                arrival = arrivals.popleft()
                queue.append(_Task(arrival.at, arrival.duration))
            waited += _place(queue, nodes, now)
            active, running = len(queue), sum(len(n.running) for n in nodes)
            samples = self._sample(nodes, active, running, counts, now)
            history.record(START + timedelta(seconds=now), samples)
            if now >= next_evaluation:
                seen = Observations(
                    now=START + timedelta(seconds=now),
                    target_dedicated=target,
                    target_low_priority=low,
                    current_dedicated=len(nodes),
                    usable=sum(1 for n in nodes if n.up_at <= now and not n.draining),
                    slots_per_node=self.slots_per_node,
                )
                result = evaluate(self.formula, seen, history)
                if result.error is None:
                    target, low = result.target_dedicated, result.target_low_priority
                    nodes = self._apply(nodes, target, result.deallocation_option, queue, counts, now)
                    waited += _place(queue, nodes, now)
                evaluations.append(Evaluation(now, active, running, result, len(nodes)))
                next_evaluation += every
            peak = max(peak, len(nodes))
            self.timeline.append(Tick(now, samples, target, len(nodes)))
            if not arrivals and not queue and not nodes:
                break
            node_seconds += step * len(nodes)
            now += step
        totals = Totals(
            node_hours=node_seconds / 3600,
            task_wait_hours=waited / 3600,
            peak_nodes=peak,
            completed=counts["completed"],
            failed=counts["failed"],
            requeued=counts["requeued"],
            seconds=now,
        )
        return evaluations, totals

    def _sample(
        self, nodes: list[_Node], active: int, running: int, counts: dict[str, int], now: float
    ) -> dict[str, float]:
        up = [n for n in nodes if n.up_at <= now]
        slots = sum(n.slots for n in up)
        values = dict.fromkeys(NODE_METRICS, 0.0)
        values["$CPUPercent"] = 100.0 * sum(len(n.running) for n in up) / slots if slots else 0.0
        values["$SampleNodeCount"] = float(len(up))
        values["$WallClockSeconds"] = self.period.total_seconds() * len(up)
        values["$PreemptedNodeCount"] = 0.0
        return {
            **values,
            "$ActiveTasks": active,
            "$RunningTasks": running,
            "$PendingTasks": active + running,
            "$SucceededTasks": counts["completed"],
            "$FailedTasks": counts["failed"],
        }

    def _apply(
        self,
        nodes: list[_Node],
        target: int,
        option: DeallocationOption,
        queue: deque[_Task],
        counts: dict[str, int],
        now: float,
    ) -> list[_Node]:
        staying = [n for n in nodes if not n.draining]
        if target >= len(staying):
            start = now + self.node_start.total_seconds()
            return nodes + [_Node(start, self.slots_per_node) for _ in range(target - len(staying))]
        victims = sorted(staying, key=lambda n: len(n.running))[: len(staying) - target]
        for node in victims:
            if option in (DeallocationOption.TASKCOMPLETION, DeallocationOption.RETAINEDDATA) and node.running:
                node.draining = True
                continue
            for task in node.running:
                if option == DeallocationOption.TERMINATE:
                    counts["failed"] += 1
                else:
                    counts["requeued"] += 1
                    task.waiting_since = now
                    queue.appendleft(task)
            node.running.clear()
        return [n for n in nodes if not (n in victims and not n.draining)]


def _place(queue: deque[_Task], nodes: list[_Node], now: float) -> float:
    """Start waiting tasks, oldest first, on nodes that are up and take tasks; the seconds they waited."""
    waited = 0.0
    for node in nodes:
        while queue and node.up_at <= now and not node.draining and len(node.running) < node.slots:
            task = queue.popleft()
            waited += now - task.waiting_since
            task.ends = now + task.duration
            node.running.append(task)
    return waited
