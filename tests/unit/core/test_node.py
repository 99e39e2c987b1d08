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
STARTING = {"state_transition_time": NOW, "errors": None}  # errors of the last boot no longer hold
BOOTED = {"state_transition_time": NOW, "last_boot_time": NOW}
REIMAGED = {"state_transition_time": NOW, "incarnation": 3}  # a new incarnation
ERRORS = [{"code": "StartTaskFailed", "message": "m"}]
RESTARTABLE = (S.IDLE, S.RUNNING, S.START_TASK_FAILED, S.UNUSABLE)
#: states of a node whose worker answers: lost or preempted from any of them
ANSWERED = (S.STARTING, S.WAITING_FOR_START_TASK, S.START_TASK_FAILED, S.UNUSABLE, S.IDLE, S.RUNNING)

#: edge -> changes beyond the state column. The spec; TRANSITIONS must match it.
EDGES: dict[tuple[NodeState, NodeState], dict[str, Any]] = {
    (S.CREATING, S.STARTING): STARTING,
    (S.REBOOTING, S.STARTING): STARTING,
    (S.REIMAGING, S.STARTING): STARTING,
    (S.UNKNOWN, S.STARTING): STARTING,  # the worker came back
    (S.PREEMPTED, S.STARTING): STARTING,  # spot capacity came back
    (S.DEALLOCATED, S.STARTING): STARTING,  # you started it
    (S.IDLE, S.DEALLOCATING): STAMP,
    (S.RUNNING, S.DEALLOCATING): STAMP,
    (S.DEALLOCATING, S.DEALLOCATED): STAMP,
    (S.STARTING, S.IDLE): BOOTED,
    (S.STARTING, S.WAITING_FOR_START_TASK): BOOTED,
    (S.WAITING_FOR_START_TASK, S.IDLE): STAMP,
    (S.WAITING_FOR_START_TASK, S.START_TASK_FAILED): {**STAMP, "errors": ERRORS},
    (S.STARTING, S.UNUSABLE): {**STAMP, "errors": ERRORS},  # its pool's packages could not be deployed
    (S.IDLE, S.RUNNING): STAMP,
    (S.RUNNING, S.IDLE): STAMP,
    (S.IDLE, S.OFFLINE): STAMP,  # shown, not stored: scheduling disabled, nothing runs
    (S.RUNNING, S.OFFLINE): STAMP,
    (S.OFFLINE, S.IDLE): STAMP,
    **{(s, S.UNKNOWN): STAMP for s in ANSWERED},
    (S.UNKNOWN, S.UNKNOWN): {},  # still lost: the transition time stays
    **{(s, S.REBOOTING): STAMP for s in RESTARTABLE},
    **{(s, S.REIMAGING): REIMAGED for s in RESTARTABLE},
    # a preempted spot node returns as a fresh node: a new incarnation
    **{(s, S.PREEMPTED): REIMAGED for s in ANSWERED},
    **{(s, S.LEAVING_POOL): STAMP for s in S if s is not S.LEAVING_POOL},
    # its host refused it or did not start it in time: never retried
    **{(s, S.UNUSABLE): {**STAMP, "errors": ERRORS} for s in (S.CREATING, S.STARTING)},
}


#: state -> the 409 code of a node operation that state refuses (batch-status-and-error-codes documents the
#: NodeBeing* codes and NodeStateUnusable; waitingforstarttask and starttaskfailed are Kiln's choices). The spec.
REFUSED: dict[NodeState, str] = {
    S.CREATING: "NodeBeingCreated",
    S.STARTING: "NodeBeingStarted",
    S.WAITING_FOR_START_TASK: "NodeBeingStarted",
    S.REBOOTING: "NodeBeingRebooted",
    S.REIMAGING: "NodeBeingReimaged",
    S.UNUSABLE: "NodeStateUnusable",
    S.START_TASK_FAILED: "NodeStateUnusable",
    **{
        s: "OperationNotValidOnNode"
        for s in (S.IDLE, S.RUNNING, S.OFFLINE, S.LEAVING_POOL, S.UNKNOWN, S.PREEMPTED, S.DEALLOCATING, S.DEALLOCATED)
    },
}


def test_table_has_exactly_the_expected_edges() -> None:
    assert set(TRANSITIONS) == set(EDGES)


@pytest.mark.parametrize("pair", pairs(S), ids=pair_id)
def test_every_pair(pair: tuple[NodeState, NodeState]) -> None:
    frm, to = pair
    row = frozen(node_row(frm))
    if pair in EDGES:
        changes = node.transition(row, to, NOW, errors=ERRORS)
        assert changes == {**EDGES[pair], "state": to.value}  # nodes keep no previous state
        assert_stored_columns(changes, schema.nodes)
    else:
        with pytest.raises(InvalidTransition) as info:
            node.transition(row, to, NOW, errors=ERRORS)
        assert (info.value.status, info.value.code) == (409, REFUSED[frm])


def test_every_state_has_its_refusal_code() -> None:
    assert node.REFUSALS == REFUSED


@pytest.mark.parametrize(
    ("state", "to", "code", "message"),
    [
        (S.REBOOTING, S.REBOOTING, "NodeBeingRebooted", "The compute node cannot be rebooted while it is rebooting."),
        (
            S.REIMAGING,
            S.DEALLOCATING,
            "NodeBeingReimaged",
            "The compute node cannot be deallocated while it is reimaging.",
        ),
        (
            S.WAITING_FOR_START_TASK,
            S.REIMAGING,
            "NodeBeingStarted",
            "The compute node cannot be reimaged while it is waitingforstarttask.",
        ),
        (
            S.START_TASK_FAILED,
            S.DEALLOCATING,
            "NodeStateUnusable",
            "The compute node cannot be deallocated while it is starttaskfailed.",
        ),
        (
            S.DEALLOCATED,
            S.REBOOTING,
            "OperationNotValidOnNode",
            "The compute node cannot be rebooted while it is deallocated.",
        ),
        (
            S.LEAVING_POOL,
            S.PREEMPTED,
            "OperationNotValidOnNode",
            "The compute node cannot be preempted while it is leavingpool.",
        ),
        (S.IDLE, S.IDLE, "OperationNotValidOnNode", "The operation is not valid on the compute node while it is idle."),
    ],
)
def test_a_refused_operation_says_which_and_why(state: NodeState, to: NodeState, code: str, message: str) -> None:
    with pytest.raises(InvalidTransition) as info:
        node.transition(frozen(node_row(state)), to, NOW)
    assert (info.value.status, info.value.code, info.value.message) == (409, code, message)


@pytest.mark.parametrize("state", [s for s in S if s is not S.DEALLOCATED])
def test_a_refused_start_answers_the_states_code(state: NodeState) -> None:
    """A start from anything but deallocated answers the state's code (starting is also Kiln's own edge from
    creating, rebooting, reimaging, unknown and preempted, so the scheduler checks the state first)."""
    refused = node.refusal(state.value, S.STARTING)
    assert (refused.code, refused.message) == (
        REFUSED[state],
        f"The compute node cannot be started while it is {state}.",
    )


def test_reboot_keeps_the_incarnation_and_reimage_bumps_it() -> None:
    row = node_row(S.IDLE)
    for op in (S.REBOOTING, S.REIMAGING, S.REIMAGING):
        row = apply(row, node.transition(frozen(row), op, NOW))
        row = apply(row, node.transition(frozen(row), S.STARTING, NOW))
        row = apply(row, node.transition(frozen(row), S.IDLE, NOW))
    assert (row["state"], row["incarnation"], row["last_boot_time"]) == ("idle", 4, NOW)


def test_schedulable_states() -> None:
    assert SCHEDULABLE == {S.IDLE, S.RUNNING}


@pytest.mark.parametrize(
    ("running", "scheduling", "state"),
    [
        (0, "enabled", S.IDLE),
        (1, "enabled", S.RUNNING),
        (7, "enabled", S.RUNNING),
        (0, "disabled", S.OFFLINE),
        (2, "disabled", S.RUNNING),  # taskcompletion: its tasks finish first
    ],
)
def test_busy_state(running: int, scheduling: str, state: NodeState) -> None:
    assert node.busy_state(running, scheduling) is state


@pytest.mark.parametrize(("node_id", "dedicated"), [("tvmps_0a1b_d", True), ("tvmps_0a1b_p", False), ("n1", True)])
def test_node_ids_say_whether_a_node_is_dedicated(node_id: str, dedicated: bool) -> None:
    assert node.is_dedicated(node_id) is dedicated
