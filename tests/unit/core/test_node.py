"""The compute node lifecycle (batch-semantics §5.2), tested as data: every (from, to) pair of NodeState."""

from __future__ import annotations

from typing import Any

import pytest

from kiln.core import node
from kiln.core.node import SCHEDULABLE, TRANSITIONS, NodeState
from kiln.errors import InvalidTransition
from kiln.store import schema

from .helpers import NOW, T0, apply, assert_stored_columns, frozen, pair_id, pairs

S = NodeState


def node_row(state: NodeState, **fields: Any) -> dict[str, Any]:
    row = {
        "id": "n1",
        "pool_key": "p",
        "state": state.value,
        "scheduling_state": "enabled",
        "state_transition_time": T0,
        "allocation_time": T0,
        "last_boot_time": T0,
        "incarnation": 2,
    }
    row.update(fields)
    return row


STAMP = {"state_transition_time": NOW}
BOOTED = {"state_transition_time": NOW, "last_boot_time": NOW}
REIMAGED = {"state_transition_time": NOW, "incarnation": 3}  # a new incarnation

#: edge -> changes beyond the state column. The spec; TRANSITIONS must match it.
EDGES: dict[tuple[NodeState, NodeState], dict[str, Any]] = {
    (S.CREATING, S.STARTING): STAMP,
    (S.STARTING, S.IDLE): BOOTED,
    (S.UNKNOWN, S.IDLE): BOOTED,  # the worker came back
    (S.IDLE, S.RUNNING): STAMP,
    (S.RUNNING, S.IDLE): STAMP,
    (S.STARTING, S.UNKNOWN): STAMP,
    (S.IDLE, S.UNKNOWN): STAMP,
    (S.RUNNING, S.UNKNOWN): STAMP,
    (S.UNKNOWN, S.UNKNOWN): {},  # still lost: the transition time stays
    (S.IDLE, S.REBOOTING): STAMP,
    (S.RUNNING, S.REBOOTING): STAMP,
    (S.IDLE, S.REIMAGING): REIMAGED,
    (S.RUNNING, S.REIMAGING): REIMAGED,
    (S.REBOOTING, S.STARTING): STAMP,
    (S.REIMAGING, S.STARTING): STAMP,
    **{(s, S.LEAVING_POOL): STAMP for s in S if s is not S.LEAVING_POOL},
}


def test_table_has_exactly_the_expected_edges() -> None:
    assert set(TRANSITIONS) == set(EDGES)


@pytest.mark.parametrize("pair", pairs(S), ids=pair_id)
def test_every_pair(pair: tuple[NodeState, NodeState]) -> None:
    frm, to = pair
    row = frozen(node_row(frm))
    if pair in EDGES:
        changes = node.transition(row, to, NOW)
        assert changes == {**EDGES[pair], "state": to.value}  # nodes keep no previous state
        assert_stored_columns(changes, schema.nodes)
    else:
        with pytest.raises(InvalidTransition) as info:
            node.transition(row, to, NOW)
        assert (info.value.status, info.value.code) == (409, "NodeStateUnusable")


def test_reboot_keeps_the_incarnation_and_reimage_bumps_it() -> None:
    row = node_row(S.IDLE)
    for op in (S.REBOOTING, S.REIMAGING, S.REIMAGING):
        row = apply(row, node.transition(frozen(row), op, NOW))
        row = apply(row, node.transition(frozen(row), S.STARTING, NOW))
        row = apply(row, node.transition(frozen(row), S.IDLE, NOW))
    assert (row["state"], row["incarnation"], row["last_boot_time"]) == ("idle", 4, NOW)


def test_schedulable_states() -> None:
    assert SCHEDULABLE == {S.IDLE, S.RUNNING}


@pytest.mark.parametrize(("running", "state"), [(0, S.IDLE), (1, S.RUNNING), (7, S.RUNNING)])
def test_busy_state(running: int, state: NodeState) -> None:
    assert node.busy_state(running) is state
