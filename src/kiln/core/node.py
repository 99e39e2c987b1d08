"""The compute node lifecycle (batch-semantics §5.2) as a table of edges."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

from kiln.core import lifecycle
from kiln.core.lifecycle import Changes, no_changes


class NodeState(StrEnum):
    CREATING = "creating"
    STARTING = "starting"
    IDLE = "idle"
    RUNNING = "running"
    REBOOTING = "rebooting"
    REIMAGING = "reimaging"
    LEAVING_POOL = "leavingpool"
    UNKNOWN = "unknown"
    OFFLINE = "offline"
    UNUSABLE = "unusable"


def _booted(row: Mapping[str, Any], now: datetime, **_: Any) -> Changes:
    return {"last_boot_time": now}


def _stamp(row: Mapping[str, Any], now: datetime, **_: Any) -> Changes:
    return {"state_transition_time": now}


def _reimaged(row: Mapping[str, Any], now: datetime, **_: Any) -> Changes:
    """A new incarnation: preparation records of the old one no longer count."""
    return {"state_transition_time": now, "incarnation": row["incarnation"] + 1}


S = NodeState
_UP = (S.IDLE, S.RUNNING)
TRANSITIONS: lifecycle.Table = {
    (S.CREATING, S.STARTING): _stamp,
    (S.STARTING, S.IDLE): lambda row, now, **e: {**_booted(row, now), **_stamp(row, now)},
    (S.UNKNOWN, S.IDLE): lambda row, now, **e: {**_booted(row, now), **_stamp(row, now)},
    (S.IDLE, S.RUNNING): _stamp,
    (S.RUNNING, S.IDLE): _stamp,
    **{(s, S.UNKNOWN): _stamp for s in (S.STARTING, S.IDLE, S.RUNNING)},
    **{(s, S.REBOOTING): _stamp for s in _UP},
    **{(s, S.REIMAGING): _reimaged for s in _UP},
    (S.REBOOTING, S.STARTING): _stamp,
    (S.REIMAGING, S.STARTING): _stamp,
    **{(s, S.LEAVING_POOL): _stamp for s in S if s is not S.LEAVING_POOL},
    (S.UNKNOWN, S.UNKNOWN): no_changes,
}

#: States in which a node may be given work.
SCHEDULABLE = frozenset(_UP)


def transition(row: Mapping[str, Any], to: NodeState, now: datetime, **event: Any) -> Changes:
    return lifecycle.transition(
        TRANSITIONS, row, to, now, conflict_code="NodeStateUnusable", track_previous=False, kind="node", **event
    )


def busy_state(running_tasks: int) -> NodeState:
    """idle and running differ only by whether job tasks run there (prep and release don't count)."""
    return S.RUNNING if running_tasks else S.IDLE
