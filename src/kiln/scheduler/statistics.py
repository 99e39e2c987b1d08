"""Task attempts' statistics, from what their nodes measured, recorded in the transaction that applies their
results (one statement per table, however many tasks ended)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from kiln.compute.protocol import StepResult
from kiln.core.task import TaskState
from kiln.scheduler.state import JobEntry, StepRef
from kiln.store import statistics
from kiln.store.batched import TaskChange
from kiln.store.statistics import Owner


def record(
    conn: Connection,
    ended: Sequence[tuple[StepResult, StepRef]],
    rows: Mapping[int, Mapping[str, Any]],
    changes: Mapping[int, TaskChange],
    jobs: Mapping[str, JobEntry],
    now: datetime,
) -> None:
    """Each task step that ended and changed its task (rows: the tasks as they were; changes: what their
    results made of them, not yet written) adds its usage to the task and its owners. A stale result (its task
    ended, requeued or deleted meanwhile) changed nothing and counts nothing."""
    tally = statistics.Tally()
    for result, ref in ended:
        change = changes.get(ref.seq) if ref.kind == "task" and ref.seq is not None else None
        row = rows.get(ref.seq) if ref.seq is not None else None
        if change is None or row is None or change.values.get("state") not in (TaskState.ACTIVE, TaskState.COMPLETED):
            continue
        note(tally, jobs.get(ref.job_key), {**row, **change.values}, result, now)
    tally.write(conn)


def note(
    tally: statistics.Tally, job: JobEntry | None, task: Mapping[str, Any], result: StepResult, now: datetime
) -> None:
    """The attempt adds its usage to the task and to its owners; a retry (the task `active` again) counts as
    one, a completion as a success or failure with its wait (from the task's creation to its last start)."""
    usage = {**(result.usage or {}), "wall_clock": max(0.0, result.end_time - result.start_time)}
    tally.add_task(task["seq"], task["job_key"], usage, now)
    counters = dict(usage)
    if task["state"] == TaskState.ACTIVE:
        counters["retries"] = 1
    else:
        counters["succeeded" if task.get("result") == "success" else "failed"] = 1
        if task.get("start_time") is not None and task.get("creation_time") is not None:
            counters["wait"] = max(0.0, (task["start_time"] - task["creation_time"]).total_seconds())
    peak = int((result.usage or {}).get("max_rss", 0))
    tally.add_owners(owners(task["job_key"], None if job is None else job.row), counters, peak, now)


def owners(job_key: str, job: Mapping[str, Any] | None) -> list[Owner]:
    """Whose statistics a task of this job adds to: its job, the schedule that made the job, its pool, the
    account."""
    found: list[Owner] = [("job", job_key), statistics.ACCOUNT]
    if job is not None:
        found.append(("pool", job["pool_key"]))
        if job.get("schedule_key"):
            found.append(("schedule", job["schedule_key"]))
    return found
