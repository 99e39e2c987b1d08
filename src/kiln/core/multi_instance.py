"""Multi-instance tasks (batch-semantics §6.5, Azure's batch-mpi article) as data: where they may run,
the subtask lifecycle, what each instance sees, and what an instance's coordination result means.

A multi-instance task is one task row (counted once) plus one instance per node: instance 0 is the
primary (its node is the task's node), instances 1..n-1 are the subtasks `subtasksinfo` lists.
Every instance downloads the common resource files into the task directory and runs the
coordination command; the primary runs the task's commandLine once every coordination command
has exited 0. The primary's exit ends the task; the subtasks are then ended.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from kiln.core import lifecycle
from kiln.core.lifecycle import Changes

#: The port Azure puts after the primary's address in AZ_BATCH_MASTER_NODE (reserved for the service).
MASTER_PORT = 6000
#: Cores per node Kiln reports in CCP_NODES (a Kiln node is one worker process).
CORES_PER_NODE = 1


class SubtaskState(StrEnum):
    PREPARING = "preparing"
    RUNNING = "running"
    COMPLETED = "completed"


def instances(spec: Mapping[str, Any]) -> int | None:
    """numberOfInstances of a task spec; None for an ordinary task."""
    settings = spec.get("multiInstanceSettings")
    if settings is None:
        return None
    return int(settings.get("numberOfInstances") or 1)


def pool_can_run(pool_spec: Mapping[str, Any]) -> bool:
    """Azure schedules multi-instance tasks only on pools with inter-node communication and one task slot per
    node; elsewhere the task is never scheduled and stays active (it is not an error)."""
    return bool(pool_spec.get("enableInterNodeCommunication")) and int(pool_spec.get("taskSlotsPerNode", 1)) == 1


def node_address(node_id: str) -> str:
    """A stable loopback address per node (127.x.y.z, never .0 or .255): Kiln's nodes share one host, and
    Linux answers on all of 127.0.0.0/8, so an instance can listen on its own node's address."""
    digest = hashlib.sha256(node_id.encode()).digest()
    return f"127.{digest[0]}.{digest[1]}.{1 + digest[2] % 254}"


def environment(node_ids: Sequence[str], index: int, hosts: Sequence[str | None] = ()) -> dict[str, str]:
    """The multi-instance variables of instance `index` (0 = primary) of a task on these nodes, in instance
    order; `hosts`: the address of each node's host where it is another machine (None or absent: the node's own
    loopback address). AZ_BATCH_TASK_SHARED_DIR is the task directory, which only the node knows as an
    absolute path."""
    known = list(hosts) + [None] * (len(node_ids) - len(hosts))
    addresses = [host or node_address(n) for n, host in zip(node_ids, known, strict=True)]
    return {
        "AZ_BATCH_HOST_LIST": ",".join(addresses),
        "AZ_BATCH_NODE_LIST": ";".join(addresses),
        "AZ_BATCH_MASTER_NODE": f"{addresses[0]}:{MASTER_PORT}",
        "AZ_BATCH_IS_CURRENT_NODE_MASTER": "true" if index == 0 else "false",
        "CCP_NODES": " ".join([str(len(addresses)), *(f"{a} {CORES_PER_NODE}" for a in addresses)]),
    }


# ---------------------------------------------------------------- coordination
class Next(StrEnum):
    """What the task does after an instance's coordination command ended."""

    WAIT = "wait"  #: other instances are still coordinating
    RUN_APPLICATION = "run_application"  #: every instance coordinated: the primary runs commandLine
    FAIL = "fail"  #: this instance failed: the whole task fails (and may be retried)


def after_coordination(exit_code: int | None, failure: Mapping[str, Any] | None, coordinated: int, total: int) -> Next:
    """`coordinated`: instances whose coordination already succeeded, not counting this one."""
    if failure is not None or exit_code != 0:
        return Next.FAIL
    return Next.RUN_APPLICATION if coordinated + 1 == total else Next.WAIT


# ---------------------------------------------------------------- subtask rows
def new_subtask(
    job_key: str,
    task_seq: int,
    subtask_id: int,
    attempt: int,
    pool_id: str,
    node_id: str,
    now: datetime,
    *,
    preparing: bool = False,
) -> dict[str, Any]:
    """An instance is bound to its node when the task is placed: `preparing` while the job preparation task
    runs there (waitForSuccess), else running (downloads are part of running)."""
    state = SubtaskState.PREPARING if preparing else SubtaskState.RUNNING
    return {
        "job_key": job_key,
        "task_seq": task_seq,
        "id": subtask_id,
        "attempt": attempt,
        "pool_id": pool_id,
        "node_id": node_id,
        "state": state.value,
        "state_transition_time": now,
        "previous_state": None,
        "previous_state_transition_time": None,
        "start_time": None if preparing else now,
        "end_time": None,
        "exit_code": None,
        "result": None,
        "failure_info": None,
    }


def _prepared(row: Mapping[str, Any], now: datetime, **_: Any) -> Changes:
    return {"start_time": now}


def _coordinated(row: Mapping[str, Any], now: datetime, *, exit_code: int | None = None, **_: Any) -> Changes:
    """The coordination command exited; the subtask runs on (its background services serve the primary)."""
    return {"exit_code": exit_code}


def _end(
    row: Mapping[str, Any],
    now: datetime,
    *,
    exit_code: int | None = None,
    failure_info: dict[str, Any] | None = None,
    **_: Any,
) -> Changes:
    """Ended with the task: the exit code is its coordination command's; a failure is its own, or how it was
    ended when its coordination command had not exited."""
    code = row["exit_code"] if exit_code is None else exit_code
    if failure_info is None and code not in (None, 0):
        failure_info = {
            "category": "usererror",
            "code": "FailureExitCode",
            "message": f"The task process exited with an unexpected exit code: {code}",
            "details": [{"name": "AdditionalErrorCode", "value": "FailureExitCode"}],
        }
    return {
        "end_time": now,
        "exit_code": code,
        "failure_info": failure_info,
        "result": "failure" if failure_info else "success",
    }


S = SubtaskState
TRANSITIONS: lifecycle.Table = {
    (S.PREPARING, S.RUNNING): _prepared,
    (S.PREPARING, S.COMPLETED): _end,
    (S.RUNNING, S.RUNNING): _coordinated,
    (S.RUNNING, S.COMPLETED): _end,
}


def transition(row: Mapping[str, Any], to: SubtaskState, now: datetime, **event: Any) -> Changes:
    """Subtask changes; running -> running records the coordination exit without a state change."""
    same = row["state"] == to.value
    changes = lifecycle.transition(TRANSITIONS, row, to, now, track_previous=not same, **event)
    changes.pop("last_modified", None)  # subtasks have no lastModified
    return changes
