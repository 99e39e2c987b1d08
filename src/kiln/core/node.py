"""The compute node lifecycle (batch-semantics §5.2) as a table of edges."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

from kiln.core import lifecycle
from kiln.core.lifecycle import Changes, no_changes
from kiln.errors import InvalidTransition


class NodeState(StrEnum):
    CREATING = "creating"
    STARTING = "starting"
    WAITING_FOR_START_TASK = "waitingforstarttask"
    START_TASK_FAILED = "starttaskfailed"
    IDLE = "idle"
    RUNNING = "running"
    REBOOTING = "rebooting"
    REIMAGING = "reimaging"
    LEAVING_POOL = "leavingpool"
    UNKNOWN = "unknown"
    OFFLINE = "offline"
    UNUSABLE = "unusable"
    PREEMPTED = "preempted"
    DEALLOCATING = "deallocating"
    DEALLOCATED = "deallocated"


class SchedulingState(StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"


def _booted(row: Mapping[str, Any], now: datetime, **_: Any) -> Changes:
    return {"last_boot_time": now}


def _stamp(row: Mapping[str, Any], now: datetime, **_: Any) -> Changes:
    return {"state_transition_time": now}


def _reimaged(row: Mapping[str, Any], now: datetime, **_: Any) -> Changes:
    """A new incarnation: preparation records of the old one no longer count."""
    return {"state_transition_time": now, "incarnation": row["incarnation"] + 1}


def _preempted(row: Mapping[str, Any], now: datetime, **_: Any) -> Changes:
    """A spot node taken back: it returns as a fresh node, a new incarnation."""
    return {"state_transition_time": now, "incarnation": row["incarnation"] + 1}


def _deallocating(row: Mapping[str, Any], now: datetime, **_: Any) -> Changes:
    return {"state_transition_time": now}


def _deallocated(row: Mapping[str, Any], now: datetime, **_: Any) -> Changes:
    return {"state_transition_time": now}


def _starting(row: Mapping[str, Any], now: datetime, **_: Any) -> Changes:
    """The worker is (re)starting: errors of its last boot no longer hold."""
    return {"state_transition_time": now, "errors": None}


def _up(row: Mapping[str, Any], now: datetime, **_: Any) -> Changes:
    return {**_booted(row, now), **_stamp(row, now)}


def _start_task_succeeded(row: Mapping[str, Any], now: datetime, **_: Any) -> Changes:
    return {"state_transition_time": now}


def _start_task_failed(row: Mapping[str, Any], now: datetime, *, errors: list[dict[str, Any]], **_: Any) -> Changes:
    return {"state_transition_time": now, "errors": errors}


def _unusable(row: Mapping[str, Any], now: datetime, *, errors: list[dict[str, Any]], **_: Any) -> Changes:
    """The node takes no task: it could not start (its host refused it, or did not start it in time), or its
    pool's application packages could not be deployed on it; `errors` say why."""
    return {"state_transition_time": now, "errors": errors}


#: errors[] code of a node that could not start.
NODE_START_FAILED = "NodeStartFailed"


def start_failed_errors(message: str) -> list[dict[str, Any]]:
    """errors[] of a node that could not start: Azure's ComputeNodeError shape."""
    return [{"code": NODE_START_FAILED, "message": f"The compute node could not start: {message}"}]


def _shown(row: Mapping[str, Any], now: datetime, **_: Any) -> Changes:
    """An edge Kiln computes when it shows a node (busy_state), never stores."""
    return {"state_transition_time": now}


S = NodeState
_UP = (S.IDLE, S.RUNNING)
#: States a user may reboot or reimage a node from: up, or failed its start task or its pool's packages (the
#: usual remedy).
_RESTARTABLE = (*_UP, S.START_TASK_FAILED, S.UNUSABLE)
#: States of a node whose worker answers: it can be lost or preempted.
_ANSWERED = (S.STARTING, S.WAITING_FOR_START_TASK, S.START_TASK_FAILED, S.UNUSABLE, *_UP)
TRANSITIONS: lifecycle.Table = {
    **{
        (s, S.STARTING): _starting
        for s in (S.CREATING, S.REBOOTING, S.REIMAGING, S.UNKNOWN, S.PREEMPTED, S.DEALLOCATED)
    },
    (S.STARTING, S.IDLE): _up,
    (S.STARTING, S.WAITING_FOR_START_TASK): _up,
    (S.WAITING_FOR_START_TASK, S.IDLE): _start_task_succeeded,
    (S.WAITING_FOR_START_TASK, S.START_TASK_FAILED): _start_task_failed,
    (S.IDLE, S.RUNNING): _stamp,
    (S.RUNNING, S.IDLE): _stamp,
    (S.IDLE, S.OFFLINE): _shown,
    (S.RUNNING, S.OFFLINE): _shown,
    (S.OFFLINE, S.IDLE): _shown,
    **{(s, S.UNKNOWN): _stamp for s in _ANSWERED},
    **{(s, S.REBOOTING): _stamp for s in _RESTARTABLE},
    **{(s, S.REIMAGING): _reimaged for s in _RESTARTABLE},
    **{(s, S.PREEMPTED): _preempted for s in _ANSWERED},
    **{(s, S.DEALLOCATING): _deallocating for s in _UP},
    (S.DEALLOCATING, S.DEALLOCATED): _deallocated,
    **{(s, S.UNUSABLE): _unusable for s in (S.CREATING, S.STARTING)},
    **{(s, S.LEAVING_POOL): _stamp for s in S if s is not S.LEAVING_POOL},
    (S.UNKNOWN, S.UNKNOWN): no_changes,
}

#: States in which a node may be given work.
SCHEDULABLE = frozenset(_UP)


#: Azure's 409 code for a node operation (reboot, reimage, deallocate, start, preempt) that the node's state
#: refuses, by that state: the codes Batch documents for a node being created, started, rebooted or reimaged,
#: or unusable (batch-status-and-error-codes), else OperationNotValidOnNode ("not valid on the node"). Kiln's
#: choices where Azure documents none: waitingforstarttask is still being started; starttaskfailed is unusable
#: (what Azure called such a node before that state existed). idle and running refuse only a start; offline is
#: shown, never stored (its node is idle or running underneath).
REFUSALS: Mapping[NodeState, str] = {
    S.CREATING: "NodeBeingCreated",
    S.STARTING: "NodeBeingStarted",
    S.WAITING_FOR_START_TASK: "NodeBeingStarted",
    S.START_TASK_FAILED: "NodeStateUnusable",
    S.IDLE: "OperationNotValidOnNode",
    S.RUNNING: "OperationNotValidOnNode",
    S.REBOOTING: "NodeBeingRebooted",
    S.REIMAGING: "NodeBeingReimaged",
    S.LEAVING_POOL: "OperationNotValidOnNode",
    S.UNKNOWN: "OperationNotValidOnNode",
    S.OFFLINE: "OperationNotValidOnNode",
    S.UNUSABLE: "NodeStateUnusable",
    S.PREEMPTED: "OperationNotValidOnNode",
    S.DEALLOCATING: "OperationNotValidOnNode",
    S.DEALLOCATED: "OperationNotValidOnNode",
}
#: The operation behind an edge into each state, as the words of a refusal put it ("cannot be rebooted").
OPERATIONS: Mapping[NodeState, str] = {
    S.REBOOTING: "rebooted",
    S.REIMAGING: "reimaged",
    S.DEALLOCATING: "deallocated",
    S.STARTING: "started",
    S.PREEMPTED: "preempted",
}


def refusal(state: str, to: NodeState | None = None) -> InvalidTransition:
    """The 409 for an operation (an edge into `to`) that a node in `state` refuses: its code by REFUSALS."""
    done = OPERATIONS.get(to) if to is not None else None
    what = f"The compute node cannot be {done}" if done else "The operation is not valid on the compute node"
    return InvalidTransition(f"{what} while it is {state}.", code=REFUSALS[NodeState(state)])


def transition(row: Mapping[str, Any], to: NodeState, now: datetime, **event: Any) -> Changes:
    """Changes that move the node to `to`; an edge the table lacks raises refusal(its state, to)."""
    return lifecycle.transition(TRANSITIONS, row, to, now, track_previous=False, kind="node", refuse=refusal, **event)


#: States of a node whose worker has answered since it was last (re)started.
#: States of a node that is done starting: its worker answered since it was last (re)started, or it could not
#: start or take its pool's packages (unusable).
BOOTED = frozenset({S.WAITING_FOR_START_TASK, S.START_TASK_FAILED, S.UNUSABLE, *_UP})
#: States in which a node counts as there for a resize: booted, or deallocated or preempted (their own doing).
SETTLED = BOOTED | {S.DEALLOCATED, S.PREEMPTED}


def busy_state(running_tasks: int, scheduling_state: str = SchedulingState.ENABLED) -> NodeState:
    """idle, running and offline are one stored state: running while job tasks run there (prep and release
    don't count), else offline when task scheduling is disabled, else idle."""
    if running_tasks:
        return S.RUNNING
    return S.OFFLINE if scheduling_state == SchedulingState.DISABLED else S.IDLE


#: Node ids end as Azure's do: `_d` for a dedicated node, `_p` for a low-priority (spot) one.
DEDICATED_SUFFIX, LOW_PRIORITY_SUFFIX = "_d", "_p"


def is_dedicated(node_id: str) -> bool:
    return not node_id.endswith(LOW_PRIORITY_SUFFIX)
