"""The job lifecycle (batch-semantics §5.3, §4.3), tested as data: every (from, to) pair of JobState."""

from __future__ import annotations

from typing import Any

import pytest

from kiln.core import job
from kiln.core.job import DISABLE_FROM, OPEN, TRANSITIONS, DisableTasks, JobState, TerminateReason
from kiln.errors import Conflict, InvalidTransition
from kiln.store import schema

from .helpers import NOW, T0, apply, assert_stored_columns, frozen, pair_id, pairs

S = JobState


def job_row(state: JobState, **fields: Any) -> dict[str, Any]:
    row = {
        "key": "j",
        "id": "j",
        "seq": 1,
        "state": state.value,
        "previous_state": None,
        "state_transition_time": T0,
        "previous_state_transition_time": None,
        "pool_key": "p",
        "priority": 0,
        "end_time": None,
        "terminate_reason": None,
        "delete_requested": False,
    }
    row.update(fields)
    return row


TERMINATE = {"reason": TerminateReason.USER.value}

#: edge -> (event, changes beyond the state columns). The spec; TRANSITIONS must match it.
EDGES: dict[tuple[JobState, JobState], tuple[dict[str, Any], dict[str, Any]]] = {
    # disable: active -> disabling -> disabled (once no task holds a node); enable: disabled -> enabling -> active
    (S.ACTIVE, S.DISABLING): ({}, {}),
    (S.DISABLING, S.DISABLED): ({}, {}),
    (S.DISABLED, S.ENABLING): ({}, {}),
    (S.ENABLING, S.ACTIVE): ({}, {}),
    (S.ACTIVE, S.TERMINATING): (TERMINATE, {"terminate_reason": "UserTerminate"}),
    (S.DISABLING, S.TERMINATING): (TERMINATE, {"terminate_reason": "UserTerminate"}),
    (S.DISABLED, S.TERMINATING): (TERMINATE, {"terminate_reason": "UserTerminate"}),
    (S.TERMINATING, S.COMPLETED): ({}, {"end_time": NOW}),
    # any state -> deleting
    (S.ACTIVE, S.DELETING): ({"reason": None}, {}),
    (S.DISABLING, S.DELETING): ({"reason": None}, {}),
    (S.DISABLED, S.DELETING): ({"reason": None}, {}),
    (S.ENABLING, S.DELETING): ({"reason": None}, {}),
    (S.TERMINATING, S.DELETING): ({"reason": None}, {}),
    (S.COMPLETED, S.DELETING): ({"reason": None}, {}),
}

#: The 409 code for a move the table does not allow, by the job's current state.
CONFLICT_CODE = {
    S.COMPLETED: "JobCompleted",
    S.TERMINATING: "JobBeingTerminated",
    S.DELETING: "JobBeingDeleted",
}


def test_table_has_exactly_the_expected_edges() -> None:
    assert set(TRANSITIONS) == set(EDGES)


@pytest.mark.parametrize("pair", pairs(S), ids=pair_id)
def test_every_pair(pair: tuple[JobState, JobState]) -> None:
    frm, to = pair
    row = frozen(job_row(frm))
    if pair in EDGES:
        event, extra = EDGES[pair]
        changes = job.transition(row, to, NOW, **event)
        assert changes == {
            **extra,
            "state": to.value,
            "previous_state": frm.value,
            "state_transition_time": NOW,
            "previous_state_transition_time": T0,
            "last_modified": NOW,
        }
        assert_stored_columns(changes, schema.jobs)
    else:
        with pytest.raises(InvalidTransition) as info:
            job.transition(row, to, NOW, **TERMINATE)
        assert info.value.code == CONFLICT_CODE.get(frm, "OperationInvalidForCurrentState")
        assert info.value.status == 409


@pytest.mark.parametrize("reason", list(TerminateReason), ids=str)
def test_terminate_records_the_reason(reason: TerminateReason) -> None:
    changes = job.transition(frozen(job_row(S.ACTIVE)), S.TERMINATING, NOW, reason=reason.value)
    assert changes["terminate_reason"] == reason.value


def test_terminate_reasons_are_batch_strings() -> None:
    assert {r.value for r in TerminateReason} == {
        "UserTerminate",
        "MaxWallClockTimeExpiry",
        "AllTasksComplete",
        "TaskFailed",
        "JMComplete",
        "TerminateJobSchedule",
    }


def test_terminate_twice_is_being_terminated_and_after_completion_is_completed() -> None:
    row = job_row(S.ACTIVE)
    row = apply(row, job.transition(frozen(row), S.TERMINATING, NOW, reason="UserTerminate"))
    with pytest.raises(InvalidTransition) as info:
        job.transition(frozen(row), S.TERMINATING, NOW, reason="UserTerminate")
    assert info.value.code == "JobBeingTerminated"
    row = apply(row, job.transition(frozen(row), S.COMPLETED, NOW))
    assert (row["state"], row["previous_state"], row["end_time"], row["terminate_reason"]) == (
        "completed",
        "terminating",
        NOW,
        "UserTerminate",
    )
    with pytest.raises(InvalidTransition) as info:
        job.transition(frozen(row), S.TERMINATING, NOW, reason="UserTerminate")
    assert info.value.code == "JobCompleted"
    row = apply(row, job.transition(frozen(row), S.DELETING, NOW, reason=None))
    assert (row["state"], row["previous_state"]) == ("deleting", "completed")


def test_open_states() -> None:
    assert OPEN == {S.ACTIVE, S.DISABLING, S.DISABLED, S.ENABLING}


@pytest.mark.parametrize("state", [s for s in S if s in {S.ACTIVE, S.DISABLING, S.DISABLED, S.ENABLING}], ids=str)
def test_check_open_accepts(state: JobState) -> None:
    assert job.check_open(state.value) is None


@pytest.mark.parametrize(
    ("state", "code", "message"),
    [
        (S.COMPLETED, "JobCompleted", "The specified job is already in a completed state."),
        (S.TERMINATING, "JobBeingTerminated", "The specified job is being terminated."),
        (S.DELETING, "JobBeingDeleted", "The specified job has been marked for deletion and is being deleted."),
    ],
    ids=str,
)
def test_check_open_rejects(state: JobState, code: str, message: str) -> None:
    with pytest.raises(Conflict) as info:
        job.check_open(state.value)
    assert (info.value.status, info.value.code, info.value.message) == (409, code, message)


def test_disable_then_enable_story() -> None:
    """Feed the job a disable, its settling, an enable and its completion; check the row after each."""
    row = job_row(S.ACTIVE)
    seen = []
    for to in (S.DISABLING, S.DISABLED, S.ENABLING, S.ACTIVE):
        row = apply(row, job.transition(frozen(row), to, NOW))
        seen.append((row["state"], row["previous_state"]))
    assert seen == [
        ("disabling", "active"),
        ("disabled", "disabling"),
        ("enabling", "disabled"),
        ("active", "enabling"),
    ]
    assert (row["end_time"], row["terminate_reason"]) == (None, None)


def test_disable_options_are_the_wire_values() -> None:
    assert {o.value for o in DisableTasks} == {"requeue", "terminate", "wait"}


#: state -> the 409 code of disable (None: accepted), and of enable.
DISABLE_ENABLE = {
    S.ACTIVE: (None, "OperationInvalidForCurrentState"),
    S.DISABLING: (None, "OperationInvalidForCurrentState"),
    S.DISABLED: (None, None),
    S.ENABLING: ("JobNotActive", "OperationInvalidForCurrentState"),
    S.TERMINATING: ("JobBeingTerminated", "JobBeingTerminated"),
    S.COMPLETED: ("JobCompleted", "JobCompleted"),
    S.DELETING: ("JobBeingDeleted", "JobBeingDeleted"),
}


def test_disable_enable_table_covers_every_state() -> None:
    assert set(DISABLE_ENABLE) == set(S)
    assert DISABLE_FROM == {s for s, (code, _) in DISABLE_ENABLE.items() if code is None}


@pytest.mark.parametrize("state", list(S), ids=str)
def test_disable_and_enable_preconditions(state: JobState) -> None:
    disable_code, enable_code = DISABLE_ENABLE[state]
    for check, code in ((job.check_disable, disable_code), (job.check_enable, enable_code)):
        if code is None:
            assert check(state.value) is None
        else:
            with pytest.raises(Conflict) as info:
                check(state.value)
            assert (info.value.status, info.value.code) == (409, code)
