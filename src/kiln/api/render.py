"""Stored rows to Batch JSON documents (what GET returns)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC
from importlib.metadata import version
from typing import Any
from urllib.parse import quote

from kiln.core.multi_instance import node_address
from kiln.core.node import NodeState, busy_state
from kiln.core.task import task_dir
from kiln.wire.times import format_time

Doc = dict[str, Any]

#: What a node's nodeAgentInfo reports as its agent's version: Kiln's own.
KILN_VERSION = version("kiln")


def _states(row: Mapping[str, Any]) -> Doc:
    doc: Doc = {"state": row["state"], "stateTransitionTime": format_time(row["state_transition_time"])}
    if row.get("previous_state"):
        doc["previousState"] = row["previous_state"]
        doc["previousStateTransitionTime"] = format_time(row["previous_state_transition_time"])
    return doc


def _entity(row: Mapping[str, Any], url: str) -> Doc:
    return {
        "id": row["id"],
        "url": url,
        "eTag": row["etag"],
        "lastModified": format_time(row["last_modified"]),
        "creationTime": format_time(row["creation_time"]),
    }


def pool(row: Mapping[str, Any], base: str, current_nodes: tuple[int, int]) -> Doc:
    """current_nodes: (dedicated, low priority)."""
    doc = {
        **row["spec"],
        **_entity(row, f"{base}/pools/{row['id']}"),
        "state": row["state"],
        "stateTransitionTime": format_time(row["state_transition_time"]),
        "allocationState": row["allocation_state"],
        "allocationStateTransitionTime": format_time(row["allocation_state_transition_time"]),
        "currentDedicatedNodes": current_nodes[0],
        "currentLowPriorityNodes": current_nodes[1],
        "targetDedicatedNodes": row["target_dedicated_nodes"],
        "targetLowPriorityNodes": row["target_low_priority_nodes"],
    }
    if row.get("resize_errors"):
        doc["resizeErrors"] = row["resize_errors"]
    return doc


def node(
    row: Mapping[str, Any],
    pool_row: Mapping[str, Any],
    base: str,
    running_tasks: int,
    running_slots: int,
    recent: Sequence[Mapping[str, Any]] = (),
) -> Doc:
    state = row["state"]
    if state in (NodeState.IDLE, NodeState.RUNNING):
        state = busy_state(running_tasks, row["scheduling_state"]).value
    doc: Doc = {
        "id": row["id"],
        "url": f"{base}/pools/{pool_row['id']}/nodes/{row['id']}",
        "state": state,
        "schedulingState": row["scheduling_state"],
        "stateTransitionTime": format_time(row["state_transition_time"]),
        "allocationTime": format_time(row["allocation_time"]),
        "ipAddress": node_address(row["id"]),
        "affinityId": f"TVM:{row['id']}",
        "vmSize": pool_row["spec"].get("vmSize"),
        "totalTasksRun": row["total_tasks_run"],
        "totalTasksSucceeded": row["total_tasks_succeeded"],
        "runningTasksCount": running_tasks,
        "runningTaskSlotsCount": running_slots,
        "isDedicated": bool(row.get("is_dedicated", True)),
    }
    if row.get("last_boot_time"):
        doc["lastBootTime"] = format_time(row["last_boot_time"])
    for name, column in (("startTask", "start_task"), ("startTaskInfo", "start_task_info"), ("errors", "errors")):
        if row.get(column):
            doc[name] = row[column]
    doc["nodeAgentInfo"] = {"version": f"kiln-{KILN_VERSION}", "lastUpdateTime": format_time(row["allocation_time"])}
    image = (pool_row["spec"].get("virtualMachineConfiguration") or {}).get("imageReference")
    if image:
        doc["virtualMachineInfo"] = {"imageReference": image}
    if recent:
        doc["recentTasks"] = [
            {
                "taskUrl": f"{base}/jobs/{task['job_id']}/tasks/{task['id']}",
                "jobId": task["job_id"],
                "taskId": task["id"],
                "taskState": task["state"],
                "executionInfo": _execution(task),
            }
            for task in recent
        ]
    return doc


def job(row: Mapping[str, Any], base: str) -> Doc:
    pool_id = row.get("pool_id") or row["spec"]["poolInfo"].get("poolId")  # an auto pool's id is generated
    execution: Doc = {"startTime": format_time(row["creation_time"]), "poolId": pool_id}
    if row.get("end_time"):
        execution["endTime"] = format_time(row["end_time"])
    if row.get("terminate_reason"):
        execution["terminateReason"] = row["terminate_reason"]
    return {
        **row["spec"],
        **_entity(row, f"{base}/jobs/{row['id']}"),
        **_states(row),
        "priority": row["priority"],
        "executionInfo": execution,
    }


def _execution(row: Mapping[str, Any]) -> Doc:
    """A task's executionInfo."""
    execution: Doc = {"retryCount": row["retry_count"], "requeueCount": row["requeue_count"]}
    for name, column in (
        ("startTime", "start_time"),
        ("endTime", "end_time"),
        ("lastRetryTime", "last_retry_time"),
        ("lastRequeueTime", "last_requeue_time"),
    ):
        if row.get(column):
            execution[name] = format_time(row[column])
    for name, column in (("exitCode", "exit_code"), ("failureInfo", "failure_info"), ("result", "result")):
        if row.get(column) is not None:
            execution[name] = row[column]
    return execution


def task(row: Mapping[str, Any], job_id: str, base: str) -> Doc:
    execution = _execution(row)
    doc = {
        **row["spec"],
        **_entity(row, f"{base}/jobs/{job_id}/tasks/{row['id']}"),
        **_states(row),
        "executionInfo": execution,
    }
    if row.get("node_id"):
        directory = task_dir(job_id, row["id"])
        doc["nodeInfo"] = node_info(base, row["pool_id"], row["node_id"], directory)
    return doc


_EXECUTION_COLUMNS = (
    "retry_count",
    "requeue_count",
    "start_time",
    "end_time",
    "last_retry_time",
    "last_requeue_time",
    "exit_code",
    "failure_info",
    "result",
)
_PREVIOUS_COLUMNS = ("previous_state", "previous_state_transition_time")
#: The task columns `task` renders each top-level property from (lower-cased, as `$select` matches); every
#: other property comes from the spec. stats: what api.statistics adds from the row (its url comes of the id).
TASK_COLUMNS: dict[str, tuple[str, ...]] = {
    "id": ("id",),
    "url": ("id",),
    "etag": ("etag",),
    "lastmodified": ("last_modified",),
    "creationtime": ("creation_time",),
    "state": ("state",),
    "statetransitiontime": ("state_transition_time",),
    "previousstate": _PREVIOUS_COLUMNS,
    "previousstatetransitiontime": _PREVIOUS_COLUMNS,
    "executioninfo": _EXECUTION_COLUMNS,
    "nodeinfo": ("id", "pool_id", "node_id"),
    "stats": ("id", "creation_time", "start_time"),
}
#: What `trimmed_task` reads in place of the columns a trimmed read left out: it renders them as nothing, and
#: `$select` drops what they became.
_UNREAD_TASK: dict[str, Any] = {
    "spec": {},
    **dict.fromkeys({column for columns in TASK_COLUMNS.values() for column in columns}),
}


def trimmed_task(row: Mapping[str, Any], job_id: str, base: str) -> Doc:
    """`task` of a row read with some columns only (task_columns): what it lacks renders as nothing."""
    return task({**_UNREAD_TASK, **row}, job_id, base)


def task_columns(names: list[str] | None) -> frozenset[str] | None:
    """The columns a task list must read to render the `$select`-ed properties (None: every column)."""
    if names is None or "*" in names:
        return None
    return frozenset(column for name in names for column in TASK_COLUMNS.get(name, ("spec",)))


def subtask(row: Mapping[str, Any], job_id: str, task_id: str, base: str) -> Doc:
    """A subtask of a multi-instance task; it runs in the task's directory on its own node."""
    doc: Doc = {
        "id": row["id"],
        "nodeInfo": node_info(base, row["pool_id"], row["node_id"], task_dir(job_id, task_id)),
        **_states(row),
    }
    for name, column in (("startTime", "start_time"), ("endTime", "end_time")):
        if row.get(column):
            doc[name] = format_time(row[column])
    if row["state"] == "completed":  # the exit code is reported once the subtask has completed
        for name, column in (("exitCode", "exit_code"), ("failureInfo", "failure_info"), ("result", "result")):
            if row.get(column) is not None:
                doc[name] = row[column]
    return doc


def node_info(base: str, pool_id: str, node_id: str, directory: str) -> Doc:
    node_url = f"{base}/pools/{pool_id}/nodes/{node_id}"
    return {
        "affinityId": f"TVM:{node_id}",
        "nodeUrl": node_url,
        "poolId": pool_id,
        "nodeId": node_id,
        "taskRootDirectory": directory,
        "taskRootDirectoryUrl": f"{node_url}/files/{directory}",
    }


def _step_info(record: Mapping[str, Any], prefix: str, directory: str, node_url: str) -> Doc:
    info: Doc = {
        "state": record[f"{prefix}_state"],
        "taskRootDirectory": directory,
        "taskRootDirectoryUrl": f"{node_url}/files/{directory}",
    }
    for name, column in (("startTime", "start_time"), ("endTime", "end_time")):
        if record.get(f"{prefix}_{column}"):
            info[name] = format_time(record[f"{prefix}_{column}"])
    for name, column in (("exitCode", "exit_code"), ("failureInfo", "failure_info"), ("result", "result")):
        if record.get(f"{prefix}_{column}") is not None:
            info[name] = record[f"{prefix}_{column}"]
    return info


def preparation_status(record: Mapping[str, Any], job_row: Mapping[str, Any], base: str) -> Doc:
    """One entry of the job's preparation and release task status list."""
    node_url = f"{base}/pools/{record['pool_id']}/nodes/{record['node_id']}"
    spec = job_row["spec"]
    doc: Doc = {"poolId": record["pool_id"], "nodeId": record["node_id"], "nodeUrl": node_url}
    if record["prep_state"] != "pending":
        prep = _step_info(record, "prep", task_dir(job_row["id"], spec["jobPreparationTask"]["id"]), node_url)
        prep["retryCount"] = record["prep_retry_count"]
        if record.get("prep_last_retry_time"):
            prep["lastRetryTime"] = format_time(record["prep_last_retry_time"])
        doc["jobPreparationTaskExecutionInfo"] = prep
    if record["release_state"] != "pending" and spec.get("jobReleaseTask"):
        doc["jobReleaseTaskExecutionInfo"] = _step_info(
            record, "release", task_dir(job_row["id"], spec["jobReleaseTask"]["id"]), node_url
        )
    return doc


def file_entry(entry, url_prefix: str) -> Doc:
    """A node or task file list item; directories carry no properties."""
    doc: Doc = {
        "name": entry.name,
        "url": f"{url_prefix}/{quote(entry.name, safe='')}",
        "isDirectory": entry.is_directory,
    }
    if not entry.is_directory:
        from datetime import datetime

        doc["properties"] = {
            "creationTime": format_time(datetime.fromtimestamp(entry.ctime, UTC)),
            "lastModified": format_time(datetime.fromtimestamp(entry.mtime, UTC)),
            "contentLength": str(entry.size),
            "contentType": content_type(entry.name),
            "fileMode": f"{entry.mode & 0o7777:o}",
        }
    return doc


def content_type(name: str) -> str:
    return "text/plain" if name.endswith(".txt") else "application/octet-stream"


def job_schedule(row: Mapping[str, Any], base: str, now) -> Doc:
    """A job schedule; nextRunTime comes from the timing rule, for a schedule that may still create jobs."""
    from kiln.core.schedule import OPEN, ScheduleState, plan, timing

    spec = row["spec"]
    execution: Doc = {}
    if ScheduleState(row["state"]) in OPEN:
        next_run = plan(timing(spec.get("schedule") or {}, row["creation_time"]), row["last_due"], now).next_run
        if next_run is not None:
            execution["nextRunTime"] = format_time(next_run)
    if row.get("recent_job_id"):
        execution["recentJob"] = {"id": row["recent_job_id"], "url": f"{base}/jobs/{row['recent_job_id']}"}
    if row.get("end_time"):
        execution["endTime"] = format_time(row["end_time"])
    doc: Doc = {
        "id": row["id"],
        "url": f"{base}/jobschedules/{row['id']}",
        "eTag": row["etag"],
        "lastModified": format_time(row["last_modified"]),
        "creationTime": format_time(row["creation_time"]),
        **_states(row),
        "schedule": spec.get("schedule", {}),
        "jobSpecification": spec["jobSpecification"],
        "executionInfo": execution,
    }
    for name in ("displayName", "metadata"):
        if spec.get(name) is not None:
            doc[name] = spec[name]
    return doc
