"""The pool lifecycle (batch-semantics §5.1): allocation state and pool state, every pair of each."""

from __future__ import annotations

from typing import Any

import pytest

from kiln.core import pool
from kiln.core.pool import ALLOCATION_TRANSITIONS, STATE_TRANSITIONS, AllocationState, PoolState
from kiln.errors import Conflict, InvalidTransition
from kiln.store import schema

from .helpers import NOW, T0, apply, assert_stored_columns, frozen, pair_id, pairs

A = AllocationState


def pool_row(state: PoolState = PoolState.ACTIVE, allocation: AllocationState = A.STEADY) -> dict[str, Any]:
    return {
        "key": "p",
        "id": "p",
        "state": state.value,
        "state_transition_time": T0,
        "allocation_state": allocation.value,
        "allocation_state_transition_time": T0,
        "target_dedicated_nodes": 2,
        "target_low_priority_nodes": 0,
        "task_slots_per_node": 1,
        "last_modified": T0,
    }


STAMP = {"allocation_state_transition_time": NOW, "last_modified": NOW}

#: edge -> changes beyond the allocation_state column. The spec; ALLOCATION_TRANSITIONS must match it.
ALLOCATION_EDGES: dict[tuple[AllocationState, AllocationState], dict[str, Any]] = {
    (A.STEADY, A.RESIZING): {**STAMP, "resize_errors": None},  # resize (or the initial sizing): errors go
    (A.RESIZING, A.STEADY): {**STAMP, "resize_errors": None},  # reached the target
    (A.RESIZING, A.STOPPING): STAMP,  # stopresize
    (A.STOPPING, A.STEADY): {**STAMP, "resize_errors": None},
    (A.RESIZING, A.RESIZING): {},  # a new target while resizing keeps the transition time
}


def test_allocation_table_has_exactly_the_expected_edges() -> None:
    assert set(ALLOCATION_TRANSITIONS) == set(ALLOCATION_EDGES)


@pytest.mark.parametrize("pair", pairs(A), ids=pair_id)
def test_every_allocation_pair(pair: tuple[AllocationState, AllocationState]) -> None:
    frm, to = pair
    row = frozen(pool_row(allocation=frm))
    if pair in ALLOCATION_EDGES:
        changes = pool.allocation(row, to, NOW)
        assert changes == {**ALLOCATION_EDGES[pair], "allocation_state": to.value}
        assert_stored_columns(changes, schema.pools)
    else:
        with pytest.raises(InvalidTransition) as info:
            pool.allocation(row, to, NOW)
        assert (info.value.status, info.value.code) == (409, "PoolBeingResized")


@pytest.mark.parametrize("pair", pairs(A), ids=pair_id)
def test_no_allocation_change_while_deleting(pair: tuple[AllocationState, AllocationState]) -> None:
    frm, to = pair
    with pytest.raises(Conflict) as info:
        pool.allocation(frozen(pool_row(PoolState.DELETING, frm)), to, NOW)
    assert (info.value.status, info.value.code) == (409, "PoolBeingDeleted")
    assert info.value.message == "The specified pool has been marked for deletion and is being reclaimed."


def test_state_table_has_exactly_the_expected_edges() -> None:
    assert set(STATE_TRANSITIONS) == {(PoolState.ACTIVE, PoolState.DELETING)}


@pytest.mark.parametrize("allocation", list(A), ids=str)
def test_delete_an_active_pool(allocation: AllocationState) -> None:
    changes = pool.delete(frozen(pool_row(PoolState.ACTIVE, allocation)), NOW)
    assert changes == {"state": "deleting", "state_transition_time": NOW, "last_modified": NOW}
    assert_stored_columns(changes, schema.pools)


def test_delete_a_deleting_pool() -> None:
    with pytest.raises(InvalidTransition) as info:
        pool.delete(frozen(pool_row(PoolState.DELETING)), NOW)
    assert (info.value.status, info.value.code) == (409, "PoolBeingDeleted")


def test_create_resize_stop() -> None:
    """The initial sizing is a resize; stopresize goes through stopping back to steady."""
    row = pool_row(allocation=A.RESIZING)
    seen = []
    for to in (A.STEADY, A.RESIZING, A.RESIZING, A.STOPPING, A.STEADY):
        row = apply(row, pool.allocation(frozen(row), to, NOW))
        seen.append(row["allocation_state"])
    assert seen == ["steady", "resizing", "resizing", "stopping", "steady"]
    assert row["state"] == "active"


@pytest.mark.parametrize(
    ("stopped", "dedicated", "low_priority", "codes"),
    [
        (False, (2, 2), (1, 1), None),  # reached the target
        (False, (3, 2), (0, 0), None),  # more than asked (a shrink still draining) is not short
        (False, (2, 3), (0, 0), ["AccountCoreQuotaReached"]),
        (False, (2, 2), (0, 1), ["AccountLowPriorityCoreQuotaReached"]),
        (False, (0, 1), (0, 1), ["AccountCoreQuotaReached", "AccountLowPriorityCoreQuotaReached"]),
        (True, (1, 6), (0, 0), ["ResizeStopped"]),
        (True, (6, 6), (0, 2), ["ResizeStopped"]),
        (True, (6, 6), (0, 0), None),  # stopped after it had them all
    ],
)
def test_resize_errors_say_why_a_resize_ended_short(
    stopped: bool, dedicated: tuple[int, int], low_priority: tuple[int, int], codes: list[str] | None
) -> None:
    errors = pool.resize_errors(stopped=stopped, dedicated=dedicated, low_priority=low_priority, max_nodes=4)
    assert (errors and [e["code"] for e in errors]) == codes
    for error in errors or ():
        assert "stop resize" in error["message"] if stopped else "at most 4 nodes" in error["message"]


def test_a_resize_clears_the_last_errors_and_steady_sets_them() -> None:
    errors = [{"code": "ResizeStopped", "message": "m"}]
    row = frozen(pool_row(allocation=A.RESIZING))
    assert pool.allocation(row, A.STEADY, NOW, errors=errors)["resize_errors"] == errors
    assert pool.allocation(frozen(pool_row()), A.RESIZING, NOW)["resize_errors"] is None
