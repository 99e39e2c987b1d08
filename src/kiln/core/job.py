"""The job lifecycle (batch-semantics §5.3) as a table of edges."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

from kiln.core import lifecycle
from kiln.core import task as task_rules
from kiln.core.lifecycle import Changes, no_changes
from kiln.wire.models import JobManagerTask


class JobState(StrEnum):
    ACTIVE = "active"
    DISABLING = "disabling"
    DISABLED = "disabled"
    ENABLING = "enabling"
    TERMINATING = "terminating"
    COMPLETED = "completed"
    DELETING = "deleting"


class DisableTasks(StrEnum):
    """What a disable does with the job's running tasks (`disableTasks`)."""

    REQUEUE = "requeue"  #: kill them; back to active, requeueCount + 1
    TERMINATE = "terminate"  #: kill them; completed with failureInfo TaskEnded
    WAIT = "wait"  #: let them finish; the job stays disabling until then


class TerminateReason(StrEnum):
    USER = "UserTerminate"
    WALL_CLOCK = "MaxWallClockTimeExpiry"
    ALL_TASKS_COMPLETE = "AllTasksComplete"
    TASK_FAILED = "TaskFailed"
    JOB_MANAGER = "JMComplete"
    SCHEDULE = "TerminateJobSchedule"


def _terminating(row: Mapping[str, Any], now: datetime, *, reason: str, **_: Any) -> Changes:
    return {"terminate_reason": reason}


def _completed(row: Mapping[str, Any], now: datetime, **_: Any) -> Changes:
    return {"end_time": now}


S = JobState
TRANSITIONS: lifecycle.Table = {
    (S.ACTIVE, S.DISABLING): no_changes,  # disable: running tasks are handled per disableTasks
    (S.DISABLING, S.DISABLED): no_changes,  # no task of the job holds a node any more
    (S.DISABLED, S.ENABLING): no_changes,  # enable
    (S.ENABLING, S.ACTIVE): no_changes,  # scheduling resumes
    (S.ACTIVE, S.TERMINATING): _terminating,
    (S.DISABLING, S.TERMINATING): _terminating,  # e.g. wall clock or terminate while a disable waits for tasks
    (S.DISABLED, S.TERMINATING): _terminating,
    (S.TERMINATING, S.COMPLETED): _completed,
    **{(state, S.DELETING): no_changes for state in S if state is not S.DELETING},
}

#: States in which a job accepts new tasks and updates.
OPEN = frozenset({S.ACTIVE, S.DISABLING, S.DISABLED, S.ENABLING})

#: The 409 a job in each closed state answers to "add a task" or "update".
CLOSED_CODES = {
    S.COMPLETED: ("JobCompleted", "The specified job is already in a completed state."),
    S.TERMINATING: ("JobBeingTerminated", "The specified job is being terminated."),
    S.DELETING: ("JobBeingDeleted", "The specified job has been marked for deletion and is being deleted."),
}


#: States from which disable is accepted (202); from disabling or disabled it changes no state.
DISABLE_FROM = frozenset({S.ACTIVE, S.DISABLING, S.DISABLED})


def transition(row: Mapping[str, Any], to: JobState, now: datetime, **event: Any) -> Changes:
    current = JobState(row["state"])
    code = CLOSED_CODES.get(current, ("OperationInvalidForCurrentState",))[0]
    return lifecycle.transition(TRANSITIONS, row, to, now, conflict_code=code, kind="job", **event)


def check_disable(state: str) -> None:
    """Disable is accepted from active, disabling or disabled; otherwise Batch's 409 for the state."""
    current = JobState(state)
    if current in DISABLE_FROM:
        return
    from kiln.errors import Conflict

    if current in CLOSED_CODES:
        code, message = CLOSED_CODES[current]
        raise Conflict(message, code=code)
    raise Conflict(f"The job is {current.value}; it can be disabled only while active.", code="JobNotActive")


def check_enable(state: str) -> None:
    """Enable is accepted only from disabled; otherwise Batch's 409 for the state."""
    current = JobState(state)
    if current is S.DISABLED:
        return
    from kiln.errors import Conflict

    if current in CLOSED_CODES:
        code, message = CLOSED_CODES[current]
        raise Conflict(message, code=code)
    raise Conflict(
        f"The job is {current.value}; only a disabled job can be enabled.", code="OperationInvalidForCurrentState"
    )


def check_open(state: str) -> None:
    """Raise Batch's 409 when the job no longer takes tasks or updates."""
    from kiln.errors import Conflict

    current = JobState(state)
    if current not in OPEN:
        code, message = CLOSED_CODES[current]
        raise Conflict(message, code=code)


def new_row(
    job_id: str,
    spec: Mapping[str, Any],
    *,
    pool_key: str,
    now: datetime,
    etag: str,
    pool_id: str | None = None,
    schedule_key: str | None = None,
) -> Changes:
    """A new job: active from its creation (`executionInfo.startTime`); `seq` is given by the store."""
    return {
        "key": job_id.lower(),
        "id": job_id,
        "spec": dict(spec),
        "state": JobState.ACTIVE.value,
        "state_transition_time": now,
        "pool_key": pool_key,
        "pool_id": pool_id,
        "schedule_key": schedule_key,
        "priority": spec.get("priority", 0),
        "creation_time": now,
        "last_modified": now,
        "etag": etag,
        "delete_requested": False,
    }


def manager_task_doc(job_spec: Mapping[str, Any]) -> dict[str, Any] | None:
    """The stored spec of the ordinary task a job's jobManagerTask becomes (None: the job has none)."""
    manager = job_spec.get("jobManagerTask")
    if manager is None:
        return None
    task = JobManagerTask.model_validate(manager).as_task()
    return task.materialize(job_spec["constraints"]["maxTaskRetryCount"])


def manager_task(job: Mapping[str, Any], *, now: datetime, etag: str) -> Changes | None:
    """The row of a new job's job manager task, its first task (None: the job has none).

    Every new job, added through the API or by a schedule, is inserted with it (`rows.add_job`)."""
    doc = manager_task_doc(job["spec"])
    return None if doc is None else task_rules.new_row(job["key"], doc, now=now, etag=etag)
