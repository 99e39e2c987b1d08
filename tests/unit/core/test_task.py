"""The task lifecycle (batch-semantics §5.4), tested as data: every (from, to) pair of TaskState."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from kiln.core import task
from kiln.core.task import TRANSITIONS, TaskState
from kiln.errors import Conflict, InvalidTransition
from kiln.store import schema

from .helpers import NOW, T0, apply, assert_stored_columns, frozen, pair_id, pairs

S = TaskState
ENDED = task.ended_by("the job was ended.")
OLD_FAILURE = task.exit_failure(3)


def task_row(state: TaskState, **fields: Any) -> dict[str, Any]:
    """A task that already ran once (attempt 4, a failed exit) so that every handler has something to change."""
    row = {
        "seq": 7,
        "job_key": "j",
        "key": "t",
        "id": "t",
        "state": state.value,
        "previous_state": None,
        "state_transition_time": T0,
        "previous_state_transition_time": None,
        "required_slots": 1,
        "max_retries": 5,
        "pool_id": "p1",
        "node_id": "n1",
        "attempt": 4,
        "retry_count": 2,
        "requeue_count": 3,
        "last_retry_time": None,
        "last_requeue_time": None,
        "start_time": T0,
        "end_time": None,
        "exit_code": 3,
        "result": "failure",
        "failure_info": OLD_FAILURE,
    }
    row.update(fields)
    return row


WHERE = {"pool_id": "p2", "node_id": "n2", "attempt": 5}

#: edge -> (event, the changes beyond the state columns). This table is the spec; TRANSITIONS must match it.
EDGES: dict[tuple[TaskState, TaskState], tuple[dict[str, Any], dict[str, Any]]] = {
    (S.ACTIVE, S.PREPARING): (WHERE, {"pool_id": "p2", "node_id": "n2", "attempt": 5}),
    (S.ACTIVE, S.RUNNING): (
        WHERE,
        {
            "pool_id": "p2",
            "node_id": "n2",
            "attempt": 5,
            "start_time": NOW,
            "end_time": None,
            "exit_code": None,
            "result": None,
            "failure_info": None,
        },
    ),
    (S.ACTIVE, S.COMPLETED): ({"failure_info": ENDED}, {"end_time": NOW, "failure_info": ENDED, "result": "failure"}),
    (S.PREPARING, S.RUNNING): ({}, {"start_time": NOW}),
    (S.PREPARING, S.ACTIVE): ({}, {"node_id": None}),  # prep failed: neither a retry nor a requeue
    (S.PREPARING, S.COMPLETED): (
        {"failure_info": ENDED},
        {"end_time": NOW, "failure_info": ENDED, "result": "failure"},
    ),
    (S.RUNNING, S.ACTIVE): ({}, {"requeue_count": 4, "last_requeue_time": NOW, "node_id": None}),
    (S.RUNNING, S.COMPLETED): (
        {"exit_code": 0},
        {"end_time": NOW, "exit_code": 0, "failure_info": None, "result": "success"},
    ),
    (S.COMPLETED, S.ACTIVE): (
        {},
        {
            "retry_count": 0,
            "end_time": None,
            "exit_code": None,  # reactivate
            "failure_info": None,
            "result": None,
            "node_id": None,
        },
    ),
}


def test_table_has_exactly_the_expected_edges() -> None:
    assert set(TRANSITIONS) == set(EDGES)


def expected(frm: TaskState, to: TaskState, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        **extra,
        "state": to.value,
        "previous_state": frm.value,
        "state_transition_time": NOW,
        "previous_state_transition_time": T0,
        "last_modified": NOW,
    }


@pytest.mark.parametrize("pair", pairs(S), ids=pair_id)
def test_every_pair(pair: tuple[TaskState, TaskState]) -> None:
    frm, to = pair
    row = frozen(task_row(frm))
    if pair in EDGES:
        event, extra = EDGES[pair]
        changes = task.transition(row, to, NOW, **event)
        assert changes == expected(frm, to, extra)
        assert_stored_columns(changes, schema.tasks)
    else:
        with pytest.raises(InvalidTransition) as info:
            task.transition(row, to, NOW, **WHERE)
        assert info.value.code == ("TaskCompleted" if frm is S.COMPLETED else "OperationInvalidForCurrentState")
        assert info.value.status == 409
        assert isinstance(info.value, Conflict)
        assert f"'{frm.value}'" in info.value.message


def test_retry_counts_a_retry_not_a_requeue() -> None:
    changes = task.transition(frozen(task_row(S.RUNNING)), S.ACTIVE, NOW, retry=True)
    assert changes == expected(S.RUNNING, S.ACTIVE, {"retry_count": 3, "last_retry_time": NOW, "node_id": None})


def test_a_lost_node_or_a_restart_requeues_with_the_requeue_count() -> None:
    """Issue 2 asks for requeueCount on tasks that died with their node or the server (no retry is spent)."""
    changes = task.transition(frozen(task_row(S.RUNNING)), S.ACTIVE, NOW)
    assert changes == expected(
        S.RUNNING,
        S.ACTIVE,
        {"requeue_count": task_row(S.RUNNING)["requeue_count"] + 1, "last_requeue_time": NOW, "node_id": None},
    )


def test_completed_with_failure_exit() -> None:
    failure = task.exit_failure(2)
    changes = task.transition(frozen(task_row(S.RUNNING)), S.COMPLETED, NOW, exit_code=2, failure_info=failure)
    assert changes == expected(
        S.RUNNING, S.COMPLETED, {"end_time": NOW, "exit_code": 2, "failure_info": failure, "result": "failure"}
    )


@pytest.mark.parametrize("frm", [S.ACTIVE, S.PREPARING])
def test_ended_before_it_ran_without_failure_has_no_result(frm: TaskState) -> None:
    changes = task.transition(frozen(task_row(frm)), S.COMPLETED, NOW)
    assert changes == expected(frm, S.COMPLETED, {"end_time": NOW, "failure_info": None, "result": None})


def test_state_read_from_the_store_as_a_plain_string() -> None:
    row = frozen({**task_row(S.ACTIVE), "state": "active"})
    assert task.transition(row, S.RUNNING, NOW, **WHERE)["state"] == "running"


def test_retries_then_final_failure() -> None:
    """Feed a task its events (start, exit 1, retry ...) and check the row after each one."""
    row = task_row(
        S.ACTIVE,
        attempt=0,
        retry_count=0,
        requeue_count=0,
        start_time=None,
        exit_code=None,
        result=None,
        failure_info=None,
        max_retries=1,
    )
    states = []
    for attempt in (1, 2):
        row = apply(row, task.transition(frozen(row), S.RUNNING, NOW, pool_id="p", node_id="n", attempt=attempt))
        states.append(row["state"])
        if attempt == 1:
            row = apply(row, task.transition(frozen(row), S.ACTIVE, NOW, retry=True))
            states.append(row["state"])
    failure = task.exit_failure(1)
    row = apply(row, task.transition(frozen(row), S.COMPLETED, NOW, exit_code=1, failure_info=failure))
    states.append(row["state"])
    assert states == ["running", "active", "running", "completed"]
    assert (row["attempt"], row["retry_count"], row["requeue_count"]) == (2, 1, 0)
    assert (row["last_retry_time"], row["last_requeue_time"]) == (NOW, None)
    assert (row["exit_code"], row["result"], row["failure_info"]) == (1, "failure", failure)
    assert (row["previous_state"], row["node_id"], row["pool_id"]) == ("running", "n", "p")


def test_failure_info_shapes() -> None:
    assert task.failure("BlobNotFound", "gone", "usererror") == {
        "category": "usererror",
        "code": "BlobNotFound",
        "message": "gone",
    }
    assert task.failure("DiskFull", "full", "servererror", Path="/x") == {
        "category": "servererror",
        "code": "DiskFull",
        "message": "full",
        "details": [{"name": "Path", "value": "/x"}],
    }
    assert task.exit_failure(3) == {
        "category": "usererror",
        "code": "FailureExitCode",
        "message": "The task process exited with an unexpected exit code: 3",
        "details": [{"name": "AdditionalErrorCode", "value": "FailureExitCode"}],
    }
    assert task.ended_by("terminated by the user.") == {
        "category": "usererror",
        "code": "TaskEnded",
        "message": "Task was ended: terminated by the user.",
    }


def test_requeue_while_preparing_counts_a_requeue() -> None:
    """A job disable or node reboot with requeue catches a task waiting for prep: a requeue, not a retry."""
    row = task_row(S.PREPARING)
    changes = task.transition(frozen(row), S.ACTIVE, NOW, requeue=True)
    assert changes == expected(
        S.PREPARING, S.ACTIVE, {"requeue_count": row["requeue_count"] + 1, "last_requeue_time": NOW, "node_id": None}
    )


def test_reactivate_a_failed_task_resets_retries_and_keeps_requeues() -> None:
    row = task_row(S.COMPLETED, end_time=T0)
    changes = task.reactivate(frozen(row), NOW)
    assert changes == expected(
        S.COMPLETED,
        S.ACTIVE,
        {"retry_count": 0, "end_time": None, "exit_code": None, "failure_info": None, "result": None, "node_id": None},
    )
    after = apply(row, changes)
    assert (after["requeue_count"], after["attempt"], after["start_time"]) == (3, 4, T0)


@pytest.mark.parametrize(
    ("state", "fields", "code"),
    [
        (S.ACTIVE, {}, "TaskNotCompleted"),
        (S.PREPARING, {}, "TaskNotCompleted"),
        (S.RUNNING, {}, "TaskNotCompleted"),
        (S.COMPLETED, {"exit_code": 0, "result": "success", "failure_info": None}, "TaskSucceeded"),
    ],
    ids=["active", "preparing", "running", "succeeded"],
)
def test_reactivate_refuses_what_did_not_fail(state: TaskState, fields: dict[str, Any], code: str) -> None:
    with pytest.raises(Conflict) as info:
        task.reactivate(frozen(task_row(state, **fields)), NOW)
    assert (info.value.status, info.value.code) == (409, code)


def test_a_terminated_task_can_be_reactivated() -> None:
    row = task_row(S.COMPLETED, exit_code=None, failure_info=ENDED, result="failure")
    assert task.reactivate(frozen(row), NOW)["state"] == "active"


def test_a_new_task_is_active_with_its_slots_and_retries_from_its_stored_spec() -> None:
    doc = {"id": "Task-1", "commandLine": "x", "requiredSlots": 2, "constraints": {"maxTaskRetryCount": 3}}
    row = task.new_row("j", doc, now=NOW, etag="e")
    assert_stored_columns(row, schema.tasks)
    assert (row["key"], row["id"], row["spec"], row["state"]) == ("task-1", "Task-1", doc, "active")
    assert (row["required_slots"], row["max_retries"], row["attempt"], row["retry_count"]) == (2, 3, 0, 0)
    assert row["creation_time"] == row["state_transition_time"] == row["last_modified"] == NOW


@pytest.mark.parametrize(
    ("state", "retention", "ended_ago", "past"),
    [
        (S.COMPLETED, "PT1M", timedelta(minutes=2), True),
        (S.COMPLETED, "PT1M", timedelta(seconds=30), False),
        (S.COMPLETED, None, timedelta(days=30), False),  # no retentionTime: kept until the job goes
        (S.RUNNING, "PT1M", timedelta(minutes=2), False),  # not completed (a retry): its files stay
    ],
)
def test_a_tasks_files_are_gone_once_its_retention_time_has_passed(
    state: TaskState, retention: str | None, ended_ago: timedelta, past: bool
) -> None:
    row = {"state": state.value, "end_time": NOW - ended_ago, "spec": {"constraints": {"retentionTime": retention}}}
    assert task.past_retention(row, NOW) is past


@pytest.mark.parametrize(
    ("ended", "retention", "until"),
    [
        (NOW, "PT1H", NOW + timedelta(hours=1)),
        (NOW, "P7D", NOW + timedelta(days=7)),
        (NOW, None, None),  # no retentionTime: kept for good
        (None, "PT1H", None),  # never ended
    ],
)
def test_a_directory_is_kept_for_its_retention_time_from_its_end(
    ended: datetime | None, retention: str | None, until: datetime | None
) -> None:
    assert task.kept_until(ended, retention) == until


def test_a_tasks_directory_follows_azures_layout() -> None:
    assert task.task_dir("j1", "t1") == "workitems/j1/job-1/t1"
