"""Job preparation and release records (batch-semantics §4.2-4.3): both step tables, every pair, and the helpers."""

from __future__ import annotations

from typing import Any

import pytest

from kiln.core import preparation
from kiln.core.preparation import PREP_TRANSITIONS, RELEASE_TRANSITIONS, StepState
from kiln.core.task import exit_failure
from kiln.errors import InvalidTransition
from kiln.store import schema

from .helpers import NOW, T0, apply, assert_stored_columns, frozen, pair_id, pairs

S = StepState
OLD = exit_failure(3)


def record(
    prep: StepState = S.PENDING,
    release: StepState = S.PENDING,
    *,
    incarnation: int = 1,
    prep_result: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A record whose prep and release both ran once already, so resets and restarts have something to clear."""
    row = {
        "job_key": "j",
        "node_id": "n1",
        "pool_id": "p",
        "incarnation": incarnation,
        "prep_state": prep.value,
        "prep_attempt": 1,
        "prep_start_time": T0,
        "prep_end_time": T0,
        "prep_exit_code": 3,
        "prep_result": prep_result,
        "prep_failure_info": OLD,
        "prep_retry_count": 1,
        "prep_last_retry_time": None,
        "release_state": release.value,
        "release_attempt": 1,
        "release_start_time": T0,
        "release_end_time": T0,
        "release_exit_code": 3,
        "release_result": "failure",
        "release_failure_info": OLD,
    }
    row.update(fields)
    return row


def started(prefix: str, attempt: int) -> dict[str, Any]:
    return {
        f"{prefix}_start_time": NOW,
        f"{prefix}_end_time": None,
        f"{prefix}_exit_code": None,
        f"{prefix}_result": None,
        f"{prefix}_failure_info": None,
        f"{prefix}_attempt": attempt,
    }


def finished(prefix: str) -> dict[str, Any]:
    return {
        f"{prefix}_end_time": NOW,
        f"{prefix}_exit_code": 0,
        f"{prefix}_failure_info": None,
        f"{prefix}_result": "success",
    }


def reset(prefix: str) -> dict[str, Any]:
    return {
        f"{prefix}_start_time": None,
        f"{prefix}_end_time": None,
        f"{prefix}_exit_code": None,
        f"{prefix}_result": None,
        f"{prefix}_failure_info": None,
    }


FINISH = {"exit_code": 0, "failure_info": None}

#: edge -> (event, changes beyond the state column). The spec; the tables must match it.
PREP_EDGES: dict[tuple[StepState, StepState], tuple[dict[str, Any], dict[str, Any]]] = {
    (S.PENDING, S.RUNNING): ({"attempt": 2}, started("prep", 2)),
    (S.RUNNING, S.RUNNING): (
        {"attempt": 2},
        {**started("prep", 2), "prep_retry_count": 2, "prep_last_retry_time": NOW},
    ),  # non-zero exit, retries left
    (S.RUNNING, S.COMPLETED): (FINISH, finished("prep")),
    (S.RUNNING, S.PENDING): ({}, reset("prep")),  # node lost or rebooted mid-prep
    (S.COMPLETED, S.PENDING): ({}, reset("prep")),  # rerun after reboot
}
RELEASE_EDGES: dict[tuple[StepState, StepState], tuple[dict[str, Any], dict[str, Any]]] = {
    (S.PENDING, S.RUNNING): ({"attempt": 2}, started("release", 2)),
    (S.RUNNING, S.COMPLETED): (FINISH, finished("release")),
    (S.RUNNING, S.PENDING): ({}, reset("release")),  # node rebooted mid-release: it runs again
}


def test_prep_table_has_exactly_the_expected_edges() -> None:
    assert set(PREP_TRANSITIONS) == set(PREP_EDGES)


def test_release_table_has_exactly_the_expected_edges() -> None:
    assert set(RELEASE_TRANSITIONS) == set(RELEASE_EDGES)


@pytest.mark.parametrize("pair", pairs(S), ids=pair_id)
def test_every_prep_pair(pair: tuple[StepState, StepState]) -> None:
    frm, to = pair
    row = frozen(record(prep=frm, release=S.RUNNING))
    if pair in PREP_EDGES:
        event, extra = PREP_EDGES[pair]
        changes = preparation.prep(row, to, NOW, **event)
        assert changes == {**extra, "prep_state": to.value}
        assert_stored_columns(changes, schema.preparations)
        assert all(name.startswith("prep_") for name in changes), "prep must leave the release columns alone"
    else:
        with pytest.raises(InvalidTransition) as info:
            preparation.prep(row, to, NOW, attempt=2, **FINISH)
        assert (info.value.status, info.value.code) == (409, "OperationInvalidForCurrentState")


@pytest.mark.parametrize("pair", pairs(S), ids=pair_id)
def test_every_release_pair(pair: tuple[StepState, StepState]) -> None:
    frm, to = pair
    row = frozen(record(prep=S.RUNNING, release=frm))
    if pair in RELEASE_EDGES:
        event, extra = RELEASE_EDGES[pair]
        changes = preparation.release(row, to, NOW, **event)
        assert changes == {**extra, "release_state": to.value}
        assert_stored_columns(changes, schema.preparations)
        assert all(name.startswith("release_") for name in changes), "release must leave the prep columns alone"
    else:
        with pytest.raises(InvalidTransition) as info:
            preparation.release(row, to, NOW, attempt=2, **FINISH)
        assert (info.value.status, info.value.code) == (409, "OperationInvalidForCurrentState")


@pytest.mark.parametrize("prefix", ["prep", "release"])
def test_finish_with_failure(prefix: str) -> None:
    rule = preparation.prep if prefix == "prep" else preparation.release
    failure = exit_failure(4)
    changes = rule(
        frozen(record(prep=S.RUNNING, release=S.RUNNING)), S.COMPLETED, NOW, exit_code=4, failure_info=failure
    )
    assert changes == {
        f"{prefix}_end_time": NOW,
        f"{prefix}_exit_code": 4,
        f"{prefix}_failure_info": failure,
        f"{prefix}_result": "failure",
        f"{prefix}_state": "completed",
    }


def test_new_record() -> None:
    fresh = preparation.new_record("jk", "pool-1", "node-1", 3)
    assert fresh == {
        "job_key": "jk",
        "pool_id": "pool-1",
        "node_id": "node-1",
        "incarnation": 3,
        "prep_state": "pending",
        "prep_retry_count": 0,
        "prep_attempt": 0,
        "release_state": "pending",
        "release_attempt": 0,
    }
    # insertable as is: every required column is there and nothing else
    required = {c.name for c in schema.preparations.c if not c.nullable and c.default is None}
    assert required <= set(fresh) <= set(schema.preparations.c.keys())


@pytest.mark.parametrize(
    ("state", "result", "ok"),
    [
        (S.PENDING, None, False),
        (S.RUNNING, None, False),
        (S.COMPLETED, "success", True),
        (S.COMPLETED, "failure", False),
    ],
)
def test_succeeded(state: StepState, result: str | None, ok: bool) -> None:
    assert preparation.succeeded(record(prep=state, prep_result=result)) is ok


@pytest.mark.parametrize(
    ("state", "result", "record_incarnation", "node_incarnation", "excluded"),
    [
        (S.COMPLETED, "failure", 1, 1, True),  # failed prep keeps the job off this node ...
        (S.COMPLETED, "failure", 1, 2, False),  # ... until it is reimaged
        (S.COMPLETED, "success", 1, 1, False),
        (S.RUNNING, None, 1, 1, False),
        (S.PENDING, None, 1, 1, False),
    ],
)
def test_excludes_node(
    state: StepState, result: str | None, record_incarnation: int, node_incarnation: int, excluded: bool
) -> None:
    row = record(prep=state, prep_result=result, incarnation=record_incarnation)
    assert preparation.excludes_node(row, node_incarnation) is excluded


@pytest.mark.parametrize(
    ("prep", "result", "attempts", "release", "record_incarnation", "node_incarnation", "needed"),
    [
        (S.COMPLETED, "success", 1, S.PENDING, 1, 1, True),
        (S.COMPLETED, "failure", 1, S.PENDING, 1, 1, True),  # prep ran (and failed): release still runs
        (S.RUNNING, None, 1, S.PENDING, 1, 1, True),
        (S.PENDING, None, 1, S.PENDING, 1, 1, True),  # ran, then a reboot or a lost worker reset it
        (S.PENDING, None, 0, S.PENDING, 1, 1, False),  # prep never ran here
        (S.COMPLETED, "success", 1, S.PENDING, 1, 2, False),  # reimaged since prep ran
        (S.COMPLETED, "success", 1, S.RUNNING, 1, 1, False),  # release never twice
        (S.COMPLETED, "success", 1, S.COMPLETED, 1, 1, False),
    ],
)
def test_needs_release(
    prep: StepState,
    result: str | None,
    attempts: int,
    release: StepState,
    record_incarnation: int,
    node_incarnation: int,
    needed: bool,
) -> None:
    row = record(prep=prep, prep_result=result, release=release, incarnation=record_incarnation, prep_attempt=attempts)
    assert preparation.needs_release(row, node_incarnation) is needed


@pytest.mark.parametrize(
    ("prep", "result", "rerun", "reset"),
    [
        (S.COMPLETED, "success", True, True),
        (S.COMPLETED, "success", False, False),  # rerunOnNodeRebootAfterSuccess=false keeps a success
        (S.COMPLETED, "failure", False, True),
        (S.RUNNING, None, False, True),
        (S.PENDING, None, True, False),  # nothing to reset
    ],
)
def test_reset_after_reboot(prep: StepState, result: str | None, rerun: bool, reset: bool) -> None:
    assert preparation.reset_after_reboot(record(prep=prep, prep_result=result), rerun) is reset


def test_prep_retries_then_fails_and_excludes_the_node_until_reimage() -> None:
    """Feed a fresh record its events: start, two non-zero exits with one retry, then release at job end."""
    row = preparation.new_record("j", "p", "n1", 5)
    assert not preparation.needs_release(row, 5)
    row = apply(row, preparation.prep(frozen(row), S.RUNNING, NOW, attempt=1))
    row = apply(row, preparation.prep(frozen(row), S.RUNNING, NOW, attempt=2))  # retry
    failure = exit_failure(1)
    row = apply(row, preparation.prep(frozen(row), S.COMPLETED, NOW, exit_code=1, failure_info=failure))
    assert (row["prep_state"], row["prep_result"], row["prep_attempt"], row["prep_retry_count"]) == (
        "completed",
        "failure",
        2,
        1,
    )
    assert row["prep_last_retry_time"] == NOW
    assert not preparation.succeeded(row)
    assert preparation.excludes_node(row, 5) and not preparation.excludes_node(row, 6)
    assert preparation.needs_release(row, 5)
    row = apply(row, preparation.release(frozen(row), S.RUNNING, NOW, attempt=row["release_attempt"] + 1))
    assert not preparation.needs_release(row, 5)
    row = apply(row, preparation.release(frozen(row), S.COMPLETED, NOW, exit_code=0, failure_info=None))
    assert (row["release_state"], row["release_result"], row["release_attempt"]) == ("completed", "success", 1)
    assert not preparation.needs_release(row, 5)
