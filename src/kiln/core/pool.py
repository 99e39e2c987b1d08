"""The pool lifecycle (batch-semantics §5.1): state and allocation state, each a table."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

from kiln.core import lifecycle
from kiln.core.lifecycle import Changes, no_changes


class PoolState(StrEnum):
    ACTIVE = "active"
    DELETING = "deleting"


class AllocationState(StrEnum):
    STEADY = "steady"
    RESIZING = "resizing"
    STOPPING = "stopping"


def _allocation_stamp(row: Mapping[str, Any], now: datetime, **_: Any) -> Changes:
    return {"allocation_state_transition_time": now, "last_modified": now}


def _resizing(row: Mapping[str, Any], now: datetime, **_: Any) -> Changes:
    """A new resize: the errors of the last one no longer hold."""
    return {**_allocation_stamp(row, now), "resize_errors": None}


def _steady(row: Mapping[str, Any], now: datetime, *, errors: list[dict[str, Any]] | None = None, **_: Any) -> Changes:
    """The resize is over: `errors` say why it ended short of its target, if it did (resize_errors)."""
    return {**_allocation_stamp(row, now), "resize_errors": errors}


def _state_stamp(row: Mapping[str, Any], now: datetime, **_: Any) -> Changes:
    return {"state_transition_time": now, "last_modified": now}


A = AllocationState
ALLOCATION_TRANSITIONS: lifecycle.Table = {
    (A.STEADY, A.RESIZING): _resizing,
    (A.RESIZING, A.STEADY): _steady,
    (A.RESIZING, A.STOPPING): _allocation_stamp,
    (A.STOPPING, A.STEADY): _steady,
    (A.RESIZING, A.RESIZING): no_changes,
}

STATE_TRANSITIONS: lifecycle.Table = {
    (PoolState.ACTIVE, PoolState.DELETING): _state_stamp,
}


def allocation(row: Mapping[str, Any], to: AllocationState, now: datetime, **event: Any) -> Changes:
    if row["state"] == PoolState.DELETING:
        from kiln.errors import Conflict

        raise Conflict(
            "The specified pool has been marked for deletion and is being reclaimed.", code="PoolBeingDeleted"
        )
    return lifecycle.transition(
        ALLOCATION_TRANSITIONS,
        row,
        to,
        now,
        conflict_code="PoolBeingResized",
        state_field="allocation_state",
        track_previous=False,
        **event,
    )


def delete(row: Mapping[str, Any], now: datetime) -> Changes:
    return lifecycle.transition(
        STATE_TRANSITIONS, row, PoolState.DELETING, now, conflict_code="PoolBeingDeleted", track_previous=False
    )


def new_row(
    pool_id: str,
    spec: Mapping[str, Any],
    *,
    target_dedicated: int,
    target_low_priority: int,
    slots_per_node: int,
    now: datetime,
    etag: str,
) -> Changes:
    """A new pool: active, and resizing towards its targets (the first sizing is a resize)."""
    return {
        "key": pool_id.lower(),
        "id": pool_id,
        "spec": dict(spec),
        "state": PoolState.ACTIVE.value,
        "state_transition_time": now,
        "allocation_state": AllocationState.RESIZING.value,
        "allocation_state_transition_time": now,
        "target_dedicated_nodes": target_dedicated,
        "target_low_priority_nodes": target_low_priority,
        "task_slots_per_node": slots_per_node,
        "creation_time": now,
        "last_modified": now,
        "etag": etag,
    }


#: Azure's resizeErrors code of a resize that ran into the account's quota, by kind of node.
QUOTA_CODES = {"dedicated": "AccountCoreQuotaReached", "low priority": "AccountLowPriorityCoreQuotaReached"}


def resize_errors(
    *, stopped: bool, dedicated: tuple[int, int], low_priority: tuple[int, int], max_nodes: int | None
) -> list[dict[str, Any]] | None:
    """The pool's resizeErrors as it goes steady: one per kind of node ((current, target) each) short of its
    target, because the resize was stopped (Azure's ResizeStopped) or else because the server holds no more
    nodes (max_nodes, `kiln serve --max-nodes`: Kiln's counterpart of the account's core quota). None:
    nothing is short."""
    errors = []
    for kind, (current, target) in (("dedicated", dedicated), ("low priority", low_priority)):
        if current >= target:
            continue
        if stopped:
            code, why = "ResizeStopped", "due to a stop resize operation"
        else:
            code = QUOTA_CODES[kind]
            why = (
                f"because this Kiln server runs at most {max_nodes} nodes in all its pools (kiln serve --max-nodes"
                " or KILN_MAX_NODES): remove nodes or pools, or restart the server with a higher limit"
            )
        errors.append({"code": code, "message": f"Desired number of {kind} nodes could not be allocated {why}."})
    return errors or None
