"""Multi-instance rules (batch-semantics §6.2, §6.5): eligible pools, the instance environment, what a
coordination result means, and the subtask table over every (from, to) pair."""

from __future__ import annotations

from typing import Any

import pytest

from kiln.core import multi_instance as rules
from kiln.core.multi_instance import TRANSITIONS, Next, SubtaskState
from kiln.errors import InvalidTransition
from kiln.store import schema

from .helpers import NOW, T0, apply, assert_stored_columns, frozen, pair_id, pairs

S = SubtaskState


# ---------------------------------------------------------------------------------------------- pools and specs
@pytest.mark.parametrize(
    "pool_spec, runs",
    [
        ({"enableInterNodeCommunication": True, "taskSlotsPerNode": 1}, True),
        ({"enableInterNodeCommunication": True}, True),  # taskSlotsPerNode defaults to 1
        ({"enableInterNodeCommunication": False, "taskSlotsPerNode": 1}, False),  # stays active, no error
        ({"taskSlotsPerNode": 1}, False),
        ({"enableInterNodeCommunication": True, "taskSlotsPerNode": 2}, False),  # concurrent tasks: never scheduled
    ],
)
def test_pool_can_run(pool_spec, runs):
    assert rules.pool_can_run(pool_spec) is runs


@pytest.mark.parametrize(
    "spec, count",
    [
        ({"commandLine": "x"}, None),
        ({"multiInstanceSettings": {"coordinationCommandLine": "c"}}, 1),
        ({"multiInstanceSettings": {"coordinationCommandLine": "c", "numberOfInstances": 3}}, 3),
    ],
)
def test_instances(spec, count):
    assert rules.instances(spec) == count


# ---------------------------------------------------------------------------------------------- environment
def test_node_address_is_a_stable_loopback_address():
    address = rules.node_address("tvmps_abc_d")
    assert address == rules.node_address("tvmps_abc_d")
    parts = [int(p) for p in address.split(".")]
    assert parts[0] == 127 and all(0 <= p <= 255 for p in parts) and parts[3] not in (0, 255)
    assert len({rules.node_address(f"node-{i}") for i in range(50)}) == 50


@pytest.mark.parametrize("index, master", [(0, "true"), (1, "false"), (2, "false")])
def test_environment_of_each_instance(index, master):
    nodes = ["n0", "n1", "n2"]
    a = [rules.node_address(n) for n in nodes]
    assert rules.environment(nodes, index) == {
        "AZ_BATCH_HOST_LIST": f"{a[0]},{a[1]},{a[2]}",
        "AZ_BATCH_NODE_LIST": f"{a[0]};{a[1]};{a[2]}",
        "AZ_BATCH_MASTER_NODE": f"{a[0]}:6000",
        "AZ_BATCH_IS_CURRENT_NODE_MASTER": master,
        "CCP_NODES": f"3 {a[0]} 1 {a[1]} 1 {a[2]} 1",
    }


def test_a_node_on_another_host_is_reached_at_that_host_s_address():
    a0 = rules.node_address("n0")
    env = rules.environment(["n0", "n1", "n2"], 1, [None, "10.0.0.2", "10.0.0.3"])
    assert env["AZ_BATCH_HOST_LIST"] == f"{a0},10.0.0.2,10.0.0.3" and env["AZ_BATCH_MASTER_NODE"] == f"{a0}:6000"


# ---------------------------------------------------------------------------------------------- coordination
FAILURE = {"category": "usererror", "code": "CommandProgramNotFound", "message": "m"}


@pytest.mark.parametrize(
    "exit_code, failure, coordinated, total, expected",
    [
        (0, None, 0, 3, Next.WAIT),  # the first of three
        (0, None, 1, 3, Next.WAIT),
        (0, None, 2, 3, Next.RUN_APPLICATION),  # the last one: the primary runs commandLine
        (0, None, 0, 1, Next.RUN_APPLICATION),  # numberOfInstances 1
        (5, None, 0, 3, Next.FAIL),  # any non-zero exit fails the whole task
        (5, None, 2, 3, Next.FAIL),
        (None, FAILURE, 0, 2, Next.FAIL),  # a pre-processing or launch failure too
        (None, None, 1, 2, Next.FAIL),  # never ran
    ],
)
def test_after_coordination(exit_code, failure, coordinated, total, expected):
    assert rules.after_coordination(exit_code, failure, coordinated, total) is expected


# ---------------------------------------------------------------------------------------------- subtask table
def subtask(state: SubtaskState = S.RUNNING, **fields: Any) -> dict[str, Any]:
    row = rules.new_subtask("j", 7, 1, 2, "p", "n1", T0)
    row.update(state=state.value, **fields)
    return row


def failure_exit(code: int) -> dict[str, Any]:
    return {
        "category": "usererror",
        "code": "FailureExitCode",
        "message": f"The task process exited with an unexpected exit code: {code}",
        "details": [{"name": "AdditionalErrorCode", "value": "FailureExitCode"}],
    }


ENDED = {"category": "usererror", "code": "TaskEnded", "message": "Task was ended: x"}

#: (row fields, event) -> changes beyond the state columns. The spec; the table must match it.
EDGES: dict[tuple[SubtaskState, SubtaskState], list[tuple[dict, dict, dict]]] = {
    (S.PREPARING, S.RUNNING): [  # the job preparation task succeeded on its node
        ({"start_time": None}, {}, {"start_time": NOW}),
    ],
    (S.PREPARING, S.COMPLETED): [  # the task ended while it waited
        (
            {"start_time": None},
            {"failure_info": ENDED},
            {"end_time": NOW, "exit_code": None, "failure_info": ENDED, "result": "failure"},
        ),
    ],
    (S.RUNNING, S.RUNNING): [  # the coordination command exited; the subtask runs on
        ({}, {"exit_code": 0}, {"exit_code": 0}),
        ({}, {"exit_code": 5}, {"exit_code": 5}),
    ],
    (S.RUNNING, S.COMPLETED): [  # ended with the task
        ({"exit_code": 0}, {}, {"end_time": NOW, "exit_code": 0, "failure_info": None, "result": "success"}),
        ({"exit_code": 5}, {}, {"end_time": NOW, "exit_code": 5, "failure_info": failure_exit(5), "result": "failure"}),
        (
            {},
            {"failure_info": ENDED},
            {"end_time": NOW, "exit_code": None, "failure_info": ENDED, "result": "failure"},
        ),  # its coordination command had not exited
    ],
}


@pytest.mark.parametrize("pair", pairs(S), ids=pair_id)
def test_subtask_table(pair):
    start, to = pair
    cases = EDGES.get(pair)
    if cases is None:
        assert pair not in TRANSITIONS
        with pytest.raises(InvalidTransition):
            rules.transition(frozen(subtask(start)), to, NOW)
        return
    for fields, event, expected in cases:
        row = subtask(start, **fields)
        changes = rules.transition(frozen(row), to, NOW, **event)
        assert_stored_columns(changes, schema.subtasks)
        state_columns = {"state": to.value}
        if start != to:
            state_columns.update(
                previous_state=start.value, state_transition_time=NOW, previous_state_transition_time=T0
            )
        assert changes == {**expected, **state_columns}
        assert apply(row, changes)["state"] == to.value


@pytest.mark.parametrize("preparing, state, start", [(False, "running", NOW), (True, "preparing", None)])
def test_new_subtask(preparing, state, start):
    row = rules.new_subtask("j", 7, 2, 3, "p", "n2", NOW, preparing=preparing)
    assert_stored_columns(row, schema.subtasks)
    assert set(row) == set(schema.subtasks.c.keys())
    assert (row["state"], row["start_time"], row["previous_state"], row["id"], row["attempt"]) == (
        state,
        start,
        None,
        2,
        3,
    )
