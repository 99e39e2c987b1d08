"""A task attempt's statistics, from what its node measured, noted in the transaction that applies its result."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from kiln.compute.protocol import StepResult
from kiln.core.task import TaskState
from kiln.scheduler.state import JobEntry
from kiln.store import statistics
from kiln.store.statistics import Owner


def note(
    tally: statistics.Tally,
    job: JobEntry | None,
    task: Mapping[str, Any],
    result: StepResult,
    changes: Mapping[str, Any],
    now: datetime,
) -> None:
    """The attempt adds its usage to the task and to its owners; a retry counts as one, a completion as a
    success or failure with its wait (the time from the task's creation to the start of its last run)."""
    usage = {**(result.usage or {}), "wall_clock": max(0.0, result.end_time - result.start_time)}
    tally.add_task(task["seq"], task["job_key"], usage, now)
    counters = dict(usage)
    if changes.get("state") == TaskState.ACTIVE:
        counters["retries"] = 1
    else:
        counters["succeeded" if changes.get("result") == "success" else "failed"] = 1
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
