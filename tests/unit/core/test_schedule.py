"""The job schedule lifecycle and its timing rule (batch-semantics §9), tested as data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kiln.core import schedule
from kiln.core.schedule import OPEN, TRANSITIONS, Plan, ScheduleState, Timing, plan
from kiln.errors import Conflict, InvalidTransition
from kiln.store import schema

from .helpers import NOW, T0, assert_stored_columns, frozen, pair_id, pairs

S = ScheduleState


def schedule_row(state: ScheduleState, **fields: Any) -> dict[str, Any]:
    row = {
        "key": "s",
        "id": "s",
        "seq": 1,
        "state": state.value,
        "previous_state": None,
        "state_transition_time": T0,
        "previous_state_transition_time": None,
        "last_due": None,
        "job_count": 0,
        "end_time": None,
    }
    row.update(fields)
    return row


#: edge -> changes beyond the state columns. The spec; TRANSITIONS must match it.
EDGES: dict[tuple[ScheduleState, ScheduleState], dict[str, Any]] = {
    (S.ACTIVE, S.DISABLED): {},
    (S.DISABLED, S.ACTIVE): {},
    (S.ACTIVE, S.TERMINATING): {},
    (S.DISABLED, S.TERMINATING): {},
    (S.TERMINATING, S.COMPLETED): {"end_time": NOW},
    (S.ACTIVE, S.COMPLETED): {"end_time": NOW},  # natural end: nothing left to run, no job active
    (S.ACTIVE, S.DELETING): {},
    (S.DISABLED, S.DELETING): {},
    (S.TERMINATING, S.DELETING): {},
    (S.COMPLETED, S.DELETING): {},
}

CONFLICT_CODE = {
    S.COMPLETED: "JobScheduleCompleted",
    S.TERMINATING: "JobScheduleBeingTerminated",
    S.DELETING: "JobScheduleBeingDeleted",
}


def test_table_has_exactly_the_expected_edges() -> None:
    assert set(TRANSITIONS) == set(EDGES)


@pytest.mark.parametrize("pair", pairs(S), ids=pair_id)
def test_every_pair(pair: tuple[ScheduleState, ScheduleState]) -> None:
    frm, to = pair
    row = frozen(schedule_row(frm))
    if pair in EDGES:
        changes = schedule.transition(row, to, NOW)
        assert changes == {
            **EDGES[pair],
            "state": to.value,
            "previous_state": frm.value,
            "state_transition_time": NOW,
            "previous_state_transition_time": T0,
            "last_modified": NOW,
        }
        assert_stored_columns(changes, schema.job_schedules)
    else:
        with pytest.raises(InvalidTransition) as info:
            schedule.transition(row, to, NOW)
        assert info.value.code == CONFLICT_CODE.get(frm, "OperationInvalidForCurrentState")
        assert info.value.status == 409


def test_open_states() -> None:
    assert OPEN == {S.ACTIVE, S.DISABLED}


@pytest.mark.parametrize(("state", "code"), sorted(CONFLICT_CODE.items()), ids=str)
def test_check_open_rejects_closed_states(state: ScheduleState, code: str) -> None:
    with pytest.raises(Conflict) as info:
        schedule.check_open(state.value)
    assert (info.value.status, info.value.code) == (409, code)


# ---------------------------------------------------------------------------------------------- timing
M = timedelta(minutes=1)
START = T0


def at(minutes: float):
    return START + minutes * M


#: (name, timing, last_due, now) -> expected plan. Times in minutes after START.
PLANS: list[tuple[str, Timing, Any, Any, Plan]] = [
    (
        "once, before doNotRunUntil: wait for it",
        Timing(START),
        None,
        at(-5),
        Plan(due=None, next_run=at(0), wake=at(0), exhausted=False),
    ),
    (
        "once, due now, unlimited window: never closes",
        Timing(START),
        None,
        at(0),
        Plan(due=at(0), next_run=at(0), wake=None, exhausted=False),
    ),
    (
        "once, long after start, unlimited window: still due",
        Timing(START),
        None,
        at(500),
        Plan(due=at(0), next_run=at(0), wake=None, exhausted=False),
    ),
    ("once, its job made: nothing left", Timing(START), at(0), at(1), Plan.over()),
    (
        "once, window open: due until the window closes",
        Timing(START, window=2 * M),
        None,
        at(1),
        Plan(due=at(0), next_run=at(0), wake=at(2), exhausted=False),
    ),
    ("once, window missed: nothing left", Timing(START, window=2 * M), None, at(2), Plan.over()),
    (
        "recurring, first occurrence",
        Timing(START, interval=10 * M),
        None,
        at(3),
        Plan(due=at(0), next_run=at(0), wake=at(10), exhausted=False),
    ),
    (
        "recurring, occurrences missed without a job: only the current one is due",
        Timing(START, interval=10 * M),
        None,
        at(25),
        Plan(due=at(20), next_run=at(20), wake=at(30), exhausted=False),
    ),
    (
        "recurring, current occurrence served: the next one",
        Timing(START, interval=10 * M),
        at(20),
        at(25),
        Plan(due=None, next_run=at(30), wake=at(30), exhausted=False),
    ),
    (
        "recurring, previous served, current not: due (a job that finished late makes the next one now)",
        Timing(START, interval=10 * M),
        at(10),
        at(25),
        Plan(due=at(20), next_run=at(20), wake=at(30), exhausted=False),
    ),
    (
        "recurring, window of the current occurrence closed: lost, the next one",
        Timing(START, window=2 * M, interval=10 * M),
        at(10),
        at(25),
        Plan(due=None, next_run=at(30), wake=at(30), exhausted=False),
    ),
    (
        "recurring, window open",
        Timing(START, window=2 * M, interval=10 * M),
        at(10),
        at(21),
        Plan(due=at(20), next_run=at(20), wake=at(22), exhausted=False),
    ),
    (
        "recurring, window longer than the interval: closes at the next occurrence",
        Timing(START, window=60 * M, interval=10 * M),
        None,
        at(5),
        Plan(due=at(0), next_run=at(0), wake=at(10), exhausted=False),
    ),
    (
        "recurring, doNotRunAfter cuts the window",
        Timing(START, stop=at(25), interval=10 * M),
        at(10),
        at(21),
        Plan(due=at(20), next_run=at(20), wake=at(25), exhausted=False),
    ),
    (
        "recurring, next occurrence after doNotRunAfter: nothing to run, over when doNotRunAfter has passed",
        Timing(START, stop=at(15), interval=10 * M),
        at(10),
        at(12),
        Plan(due=None, next_run=None, wake=at(15), exhausted=False),
    ),
    (
        "recurring, doNotRunAfter passed after the last job: nothing left",
        Timing(START, stop=at(15), interval=10 * M),
        at(10),
        at(15),
        Plan.over(),
    ),
    (
        "recurring, doNotRunAfter passed: nothing left",
        Timing(START, stop=at(15), interval=10 * M),
        None,
        at(16),
        Plan.over(),
    ),
    (
        "doNotRunAfter before doNotRunUntil: nothing ever, over once doNotRunAfter has passed",
        Timing(START, stop=at(-1), interval=10 * M),
        None,
        at(-5),
        Plan(due=None, next_run=None, wake=at(-1), exhausted=False),
    ),
    (
        "doNotRunAfter before doNotRunUntil, passed: over",
        Timing(START, stop=at(-1), interval=10 * M),
        None,
        at(-1),
        Plan.over(),
    ),
    (
        "recurring, before doNotRunUntil",
        Timing(START, interval=10 * M),
        None,
        at(-3),
        Plan(due=None, next_run=at(0), wake=at(0), exhausted=False),
    ),
    (
        "recurring, last job due before a later doNotRunUntil (the schedule was updated)",
        Timing(START, interval=10 * M),
        at(-7),
        at(-3),
        Plan(due=None, next_run=at(0), wake=at(0), exhausted=False),
    ),
    (
        "recurring, exactly at an occurrence",
        Timing(START, interval=10 * M),
        at(0),
        at(10),
        Plan(due=at(10), next_run=at(10), wake=at(20), exhausted=False),
    ),
]


@pytest.mark.parametrize(("name", "timing", "last_due", "now", "expected"), PLANS, ids=[p[0] for p in PLANS])
def test_plan(name: str, timing: Timing, last_due, now, expected: Plan) -> None:
    assert plan(timing, last_due, now) == expected


def test_window_end_unlimited_once_never_closes() -> None:
    assert schedule.window_end(Timing(START), at(0)) is None


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({}, Timing(START)),
        (
            {
                "doNotRunUntil": "2025-03-02T10:00:00.0000000Z",
                "doNotRunAfter": "2025-03-03T10:00:00.5000000Z",
                "startWindow": "PT5M",
                "recurrenceInterval": "PT1H",
            },
            Timing(
                datetime(2025, 3, 2, 10, tzinfo=UTC),
                datetime(2025, 3, 3, 10, 0, 0, 500000, UTC),
                5 * M,
                60 * M,
            ),
        ),
        (
            {"startWindow": "P10675199DT2H48M5.4775807S", "recurrenceInterval": "PT02S"},
            Timing(START, window=None, interval=timedelta(seconds=2)),
        ),  # unlimited window: no limit
    ],
    ids=["empty", "all", "unlimited-window"],
)
def test_timing_of_a_stored_schedule(config: dict[str, str], expected: Timing) -> None:
    assert schedule.timing(config, START) == expected


def test_a_new_schedule_is_active_keyed_by_its_lowercase_id_and_has_made_no_job() -> None:
    row = schedule.new_row("Nightly", {"schedule": {}}, now=NOW, etag="0x1")
    assert_stored_columns(row, schema.job_schedules)
    assert (row["key"], row["state"], row["job_count"], row["creation_time"]) == ("nightly", "active", 0, NOW)
