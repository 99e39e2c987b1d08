"""The task lifecycle (batch-semantics §5.4) as a table of edges."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from kiln.core import lifecycle
from kiln.core.lifecycle import Changes
from kiln.wire.times import duration_seconds


class TaskState(StrEnum):
    ACTIVE = "active"
    PREPARING = "preparing"
    RUNNING = "running"
    COMPLETED = "completed"


def new_row(job_key: str, doc: dict[str, Any], *, now: datetime, etag: str) -> Changes:
    """A new task, active, from its stored spec (`doc`: defaults written out); `seq` is given by the store."""
    return {
        "job_key": job_key,
        "key": doc["id"].lower(),
        "id": doc["id"],
        "spec": doc,
        "state": TaskState.ACTIVE.value,
        "state_transition_time": now,
        "required_slots": doc["requiredSlots"],
        "max_retries": doc["constraints"]["maxTaskRetryCount"],
        "attempt": 0,
        "retry_count": 0,
        "requeue_count": 0,
        "creation_time": now,
        "last_modified": now,
        "etag": etag,
    }


def task_dir(job_id: str, task_id: str) -> str:
    """Azure's layout; a job's tasks share workitems/<job>/job-1."""
    return f"workitems/{job_id}/job-1/{task_id}"


def kept_until(ended: datetime | None, retention: str | None) -> datetime | None:
    """A finished step's directory stays for its retentionTime from its end (None: kept for good, or no end)."""
    seconds = duration_seconds(retention)
    return None if ended is None or seconds is None else ended + timedelta(seconds=seconds)


def past_retention(row: Mapping[str, Any], now: datetime) -> bool:
    """constraints.retentionTime counts from the task's end; after it the directory is (being) removed."""
    until = kept_until(row.get("end_time"), row["spec"]["constraints"].get("retentionTime"))
    return row["state"] == TaskState.COMPLETED and until is not None and now >= until


def _assign(row: Mapping[str, Any], now: datetime, *, pool_id: str, node_id: str, attempt: int, **_: Any) -> Changes:
    """Bound to a node: slots are held from here on."""
    return {"pool_id": pool_id, "node_id": node_id, "attempt": attempt}


def _start(row: Mapping[str, Any], now: datetime, *, pool_id: str, node_id: str, attempt: int, **_: Any) -> Changes:
    return {
        **_assign(row, now, pool_id=pool_id, node_id=node_id, attempt=attempt),
        "start_time": now,
        "end_time": None,
        "exit_code": None,
        "result": None,
        "failure_info": None,
    }


def _start_after_prep(row: Mapping[str, Any], now: datetime, **_: Any) -> Changes:
    return {"start_time": now}


def _unbind(row: Mapping[str, Any], now: datetime, *, requeue: bool = False, **_: Any) -> Changes:
    """Off the node before it ran: prep failed there (counted as neither retry nor requeue),
    or a requeue (job disable, node reboot) caught it waiting for prep (counted as a requeue)."""
    if requeue:
        return {"requeue_count": row["requeue_count"] + 1, "last_requeue_time": now, "node_id": None}
    return {"node_id": None}


def _requeue(row: Mapping[str, Any], now: datetime, *, retry: bool = False, **_: Any) -> Changes:
    """Off the node again: a retry after a non-zero exit, or a requeue (node lost, server restart)."""
    if retry:
        return {"retry_count": row["retry_count"] + 1, "last_retry_time": now, "node_id": None}
    return {"requeue_count": row["requeue_count"] + 1, "last_requeue_time": now, "node_id": None}


def _complete(
    row: Mapping[str, Any], now: datetime, *, exit_code: int | None = None, failure_info: dict | None = None, **_: Any
) -> Changes:
    return {
        "end_time": now,
        "exit_code": exit_code,
        "failure_info": failure_info,
        "result": "failure" if failure_info else "success",
    }


def _reactivate(row: Mapping[str, Any], now: datetime, **_: Any) -> Changes:
    """A failed task runs again: retryCount starts over, the last outcome is forgotten."""
    return {
        "retry_count": 0,
        "end_time": None,
        "exit_code": None,
        "failure_info": None,
        "result": None,
        "node_id": None,
    }


def _end_unstarted(row: Mapping[str, Any], now: datetime, *, failure_info: dict | None = None, **_: Any) -> Changes:
    """Terminated before it ran: completed with failureInfo, never started."""
    return {"end_time": now, "failure_info": failure_info, "result": "failure" if failure_info else None}


S = TaskState
TRANSITIONS: lifecycle.Table = {
    (S.ACTIVE, S.PREPARING): _assign,
    (S.ACTIVE, S.RUNNING): _start,
    (S.ACTIVE, S.COMPLETED): _end_unstarted,
    (S.PREPARING, S.RUNNING): _start_after_prep,
    (S.PREPARING, S.ACTIVE): _unbind,
    (S.PREPARING, S.COMPLETED): _end_unstarted,
    (S.RUNNING, S.ACTIVE): _requeue,
    (S.RUNNING, S.COMPLETED): _complete,
    (S.COMPLETED, S.ACTIVE): _reactivate,  # guarded by `reactivate`: failed tasks only
}


def transition(row: Mapping[str, Any], to: TaskState, now: datetime, **event: Any) -> Changes:
    code = "TaskCompleted" if row["state"] == S.COMPLETED else "OperationInvalidForCurrentState"
    return lifecycle.transition(TRANSITIONS, row, to, now, conflict_code=code, kind="task", **event)


def reactivate(row: Mapping[str, Any], now: datetime) -> Changes:
    """Reactivate (batch-semantics §5.4): only a completed task that failed; else Batch's 409."""
    from kiln.errors import Conflict

    if row["state"] != S.COMPLETED:
        raise Conflict(
            f"The task is {row['state']}; only a completed task that failed can be reactivated.",
            code="TaskNotCompleted",
        )
    if not row.get("failure_info"):
        raise Conflict(
            "The task completed successfully; only a task that failed can be reactivated.", code="TaskSucceeded"
        )
    return transition(row, S.ACTIVE, now)


def failure(code: str, message: str, category: str = "usererror", **details: str) -> dict[str, Any]:
    """A Batch failureInfo."""
    info: dict[str, Any] = {"category": category, "code": code, "message": message}
    if details:
        info["details"] = [{"name": k, "value": v} for k, v in details.items()]
    return info


def exit_failure(exit_code: int | None) -> dict[str, Any]:
    return failure(
        "FailureExitCode",
        f"The task process exited with an unexpected exit code: {exit_code}",
        AdditionalErrorCode="FailureExitCode",
    )


def ended_by(reason: str) -> dict[str, Any]:
    return failure("TaskEnded", f"Task was ended: {reason}")
