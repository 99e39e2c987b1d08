"""Replay a recorded job: the task metrics a pool running its tasks would have sampled, and a formula evaluated
over them.

The record is each task as Batch lists it (`creationTime`, `executionInfo.startTime`/`endTime`/`result`/
`requeueCount`, `dependsOn`, `multiInstanceSettings.numberOfInstances`). Samples are taken every period from
the first task's creation up to the first sample at or after the last time recorded. At a sample time a
task, weighted by its instances, counts as
- active from when it could run until it started (or ended, never having run): its creation, or, with
  dependencies, when the last of them ended — if they all succeeded or the task ran (one whose dependency
  failed and that never ran counts as blocked, as `dependencyAction` `block` leaves it);
- running from its start until its end; succeeded or failed from its end on, by its result.
Approximated: only the latest attempt of a retried or requeued task is recorded, so its earlier runs count as
active; preparation and start tasks are not tasks of the job; node metrics read 0; other jobs sharing the
pool are not seen. The formula is evaluated from the first sample every interval; each evaluation sees the
targets of the one before as the pool's current nodes (as if the pool reached every target at once). The
targets do not move the recorded tasks: it shows what the formula would have asked for, not what would follow.
For that, `arrivals` turns the job into a workload for the simulator (`simulate.py`), which runs the tasks
again on the nodes the formula asks for.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from kiln.autoscale.evaluate import Observations, evaluate
from kiln.autoscale.samples import NODE_METRICS, PERIOD, TASK_METRICS, History
from kiln.autoscale.simulate import Arrival, Evaluation, Tick, Totals
from kiln.autoscale.syntax import Formula

_ENDED = {"success": "$SucceededTasks", "failure": "$FailedTasks"}


@dataclass(frozen=True, slots=True)
class RecordedTask:
    created: datetime
    ready: datetime | None  #: when it could run (None: never)
    started: datetime | None
    ended: datetime | None
    result: str | None  #: "success" or "failure" once ended
    instances: int = 1
    requeues: int = 0


def recorded_tasks(docs: Iterable[Mapping[str, Any]]) -> list[RecordedTask]:
    """Tasks from their wire JSON (a list of tasks as Batch returns it)."""
    docs = list(docs)
    by_id = {doc["id"]: doc for doc in docs}
    return [_recorded(doc, [by_id.get(dep) for dep in _dependencies(doc, by_id)]) for doc in docs]


def _dependencies(doc: Mapping[str, Any], by_id: Mapping[str, Any]) -> list[str]:
    depends = doc.get("dependsOn") or {}
    ids = list(depends.get("taskIds") or [])
    for span in depends.get("taskIdRanges") or []:
        ids += [task_id for task_id in by_id if task_id.isdigit() and span["start"] <= int(task_id) <= span["end"]]
    return ids


def _recorded(doc: Mapping[str, Any], dependencies: Sequence[Mapping[str, Any] | None]) -> RecordedTask:
    info = doc.get("executionInfo") or {}
    created, started = datetime.fromisoformat(doc["creationTime"]), _time(info.get("startTime"))
    return RecordedTask(
        created,
        _ready(created, started, dependencies),
        started,
        _time(info.get("endTime")),
        info.get("result"),
        (doc.get("multiInstanceSettings") or {}).get("numberOfInstances") or 1,
        info.get("requeueCount") or 0,
    )


def _ready(
    created: datetime, started: datetime | None, dependencies: Sequence[Mapping[str, Any] | None]
) -> datetime | None:
    """When the task could run: its creation, or the end of its last dependency; never while one has not
    ended or, for a task that never ran, has failed."""
    ends = [created]
    for dependency in dependencies:
        info = (dependency or {}).get("executionInfo") or {}
        end = _time(info.get("endTime"))
        if end is None or (info.get("result") != "success" and started is None):
            return started
        ends.append(end)
    return max(ends) if started is None else min(max(ends), started)


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def arrivals(tasks: Sequence[RecordedTask]) -> list[Arrival]:
    """The recorded tasks as a workload for the simulated pool: each instance arrives when the task could run
    (seconds after the first creation) and runs as long as it ran; tasks that never ran are left out."""
    origin = min(task.created for task in tasks)
    return sorted(
        (
            Arrival((task.ready - origin).total_seconds(), (task.ended - task.started).total_seconds())
            for task in tasks
            if task.ready and task.started and task.ended
            for _ in range(task.instances)
        ),
        key=lambda arrival: arrival.at,
    )


def _events(tasks: Iterable[RecordedTask]) -> list[tuple[datetime, str, int]]:
    """(when, metric, change) for every count a task adds to or takes from."""
    events = []
    for task in tasks:
        left_queue = task.started or task.ended
        if task.ready is not None and (left_queue is None or task.ready < left_queue):
            events.append((task.ready, "$ActiveTasks", task.instances))
            if left_queue is not None:
                events.append((left_queue, "$ActiveTasks", -task.instances))
        if task.started is not None:
            events.append((task.started, "$RunningTasks", task.instances))
            if task.ended is not None:
                events.append((task.ended, "$RunningTasks", -task.instances))
        if task.ended is not None and task.result in _ENDED:
            events.append((task.ended, _ENDED[task.result], task.instances))
    heapq.heapify(events)
    return events


@dataclass
class Replay:
    formula: Formula
    tasks: list[RecordedTask]
    interval: timedelta = timedelta(minutes=15)
    period: timedelta = PERIOD
    slots_per_node: int = 1
    timeline: list[Tick] = field(default_factory=list)

    def run(self) -> tuple[list[Evaluation], Totals]:
        if not self.tasks:
            raise ValueError("the job has no tasks to replay")
        origin = min(task.created for task in self.tasks)
        recorded = [t for task in self.tasks for t in (task.created, task.ready, task.started, task.ended) if t]
        ticks = math.ceil((max(recorded) - origin) / self.period)
        events, counts = _events(self.tasks), dict.fromkeys(TASK_METRICS, 0)
        history, evaluations = History(self.period), []
        target = low = peak = target_ticks = 0
        every, next_evaluation = self.interval.total_seconds(), 0.0
        for tick in range(ticks + 1):
            now = origin + tick * self.period
            while events and events[0][0] <= now:
                _, metric, change = heapq.heappop(events)
                counts[metric] += change
            samples = {
                **counts,
                "$PendingTasks": counts["$ActiveTasks"] + counts["$RunningTasks"],
                **dict.fromkeys(NODE_METRICS, 0.0),
            }
            history.record(now, samples)
            at = (now - origin).total_seconds()
            if at >= next_evaluation:
                seen = Observations(
                    now=now,
                    target_dedicated=target,
                    target_low_priority=low,
                    current_dedicated=target,
                    usable=target,
                    slots_per_node=self.slots_per_node,
                )
                run = evaluate(self.formula, seen, history)
                if run.error is None:
                    target, low = run.target_dedicated, run.target_low_priority
                evaluations.append(Evaluation(at, counts["$ActiveTasks"], counts["$RunningTasks"], run, target))
                next_evaluation += every
            self.timeline.append(Tick(at, samples, target, target))
            peak, target_ticks = max(peak, target), target_ticks + target
        totals = Totals(
            node_hours=target_ticks * self.period.total_seconds() / 3600,
            task_wait_hours=sum(
                (task.started - task.ready).total_seconds() for task in self.tasks if task.started and task.ready
            )
            / 3600,
            peak_nodes=peak,
            completed=sum(1 for task in self.tasks if task.result == "success"),
            failed=sum(1 for task in self.tasks if task.result == "failure"),
            requeued=sum(task.requeues for task in self.tasks),
            seconds=ticks * self.period.total_seconds(),
        )
        return evaluations, totals
