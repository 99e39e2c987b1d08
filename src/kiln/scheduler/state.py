"""What the scheduler's parts share: step references, effects to carry out, jobs in memory."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kiln.compute.protocol import Step
from kiln.core.task import TaskState
from kiln.scheduler.slots import JobQueue

#: Task states that hold a node's slots.
ON_NODE = (TaskState.PREPARING.value, TaskState.RUNNING.value)


@dataclass(frozen=True, slots=True)
class StepRef:
    """What a step in flight belongs to; results are matched on (step_id) and checked against `attempt`."""

    kind: str
    job_key: str
    node_id: str
    attempt: int
    seq: int | None = None
    slots: int = 0


@dataclass(slots=True)
class Effects:
    """What to do once a transaction has committed."""

    run: dict[str, list[Step]] = field(default_factory=lambda: defaultdict(list))
    kill: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    remove_dirs: list[tuple[str, str]] = field(default_factory=list)  #: (node_id, path)
    #: (node_id, path, when): directories to delete once their retention time has passed
    retain: list[tuple[str, str, datetime]] = field(default_factory=list)
    wake: bool = False
    check_jobs: set[str] = field(default_factory=set)  #: onAllTasksComplete candidates


@dataclass(slots=True)
class JobEntry:
    """The scheduler's view of a job that is not finished."""

    row: dict[str, Any]
    queue: JobQueue = field(default_factory=JobQueue)

    @property
    def key(self) -> str:
        return self.row["key"]

    @property
    def spec(self) -> dict[str, Any]:
        return self.row["spec"]


def prep_key(record: dict[str, Any]) -> dict[str, str]:
    return {"job_key": record["job_key"], "node_id": record["node_id"]}
