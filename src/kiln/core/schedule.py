"""The job schedule lifecycle (batch-semantics §9) as a table of edges, and the rule that says when a job is due.

Occurrences of a schedule fall at `start + k * recurrenceInterval` (k = 0, 1, ...; only k = 0 without an
interval), where `start` is doNotRunUntil or else the schedule's creation time. Each occurrence may create
a job while its start window is open: from its due time until the first of due + startWindow, the next
occurrence (a due job is never carried into the next interval) and doNotRunAfter. A schedule has at most
one active job: an occurrence that comes while the previous job is still active waits for that job, and is
lost if its window closes first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from kiln.core import lifecycle
from kiln.core.lifecycle import Changes, no_changes
from kiln.wire.times import parse_duration


class ScheduleState(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"
    TERMINATING = "terminating"
    COMPLETED = "completed"
    DELETING = "deleting"


def _ended(row: Mapping[str, Any], now: datetime, **_: Any) -> Changes:
    return {"end_time": now}


S = ScheduleState
TRANSITIONS: lifecycle.Table = {
    (S.ACTIVE, S.DISABLED): no_changes,  # disable (204)
    (S.DISABLED, S.ACTIVE): no_changes,  # enable (204)
    (S.ACTIVE, S.TERMINATING): no_changes,  # terminate: the active job is terminated first
    (S.DISABLED, S.TERMINATING): no_changes,
    (S.TERMINATING, S.COMPLETED): _ended,  # the terminated job has completed
    (S.ACTIVE, S.COMPLETED): _ended,  # natural end: no occurrence left and no job active
    **{(state, S.DELETING): no_changes for state in S if state is not S.DELETING},
}

#: States in which a schedule takes updates and may create jobs (disabled: keeps its timing but creates none).
OPEN = frozenset({S.ACTIVE, S.DISABLED})

#: The 409 a schedule in each closed state answers to an operation that needs it open.
CLOSED_CODES = {
    S.COMPLETED: ("JobScheduleCompleted", "The specified job schedule is already in completed state."),
    S.TERMINATING: ("JobScheduleBeingTerminated", "The specified job schedule is being terminated."),
    S.DELETING: (
        "JobScheduleBeingDeleted",
        "The specified job schedule has been marked for deletion and is being deleted.",
    ),
}


def transition(row: Mapping[str, Any], to: ScheduleState, now: datetime, **event: Any) -> Changes:
    current = ScheduleState(row["state"])
    code = CLOSED_CODES.get(current, ("OperationInvalidForCurrentState",))[0]
    return lifecycle.transition(TRANSITIONS, row, to, now, conflict_code=code, **event)


def new_row(schedule_id: str, spec: Mapping[str, Any], *, now: datetime, etag: str) -> Changes:
    """A new job schedule: active from its creation; `seq` is given by the store."""
    return {
        "key": schedule_id.lower(),
        "id": schedule_id,
        "spec": dict(spec),
        "state": ScheduleState.ACTIVE.value,
        "state_transition_time": now,
        "job_count": 0,
        "creation_time": now,
        "last_modified": now,
        "etag": etag,
    }


def check_open(state: str) -> None:
    """Raise Batch's 409 when the schedule no longer takes updates, disable or enable."""
    from kiln.errors import Conflict

    current = ScheduleState(state)
    if current not in OPEN:
        code, message = CLOSED_CODES[current]
        raise Conflict(message, code=code)


# ---------------------------------------------------------------------------------------------- timing
@dataclass(frozen=True, slots=True)
class Timing:
    """A schedule's `schedule` element, in Python values."""

    start: datetime  #: doNotRunUntil, else the schedule's creation time
    stop: datetime | None = None  #: doNotRunAfter: no job is created from then on
    window: timedelta | None = None  #: startWindow; None = unlimited
    interval: timedelta | None = None  #: recurrenceInterval; None = one job only


def timing(config: Mapping[str, Any], created: datetime) -> Timing:
    """A stored `schedule` element (times and ISO 8601 durations as the wire has them) as the rule takes it."""

    def when(name: str) -> datetime | None:
        return datetime.fromisoformat(config[name]) if config.get(name) else None

    def span(name: str) -> timedelta | None:
        value = parse_duration(config[name]) if config.get(name) else None
        return None if value is not None and value >= UNLIMITED_SPAN else value

    return Timing(
        start=when("doNotRunUntil") or created,
        stop=when("doNotRunAfter"),
        window=span("startWindow"),
        interval=span("recurrenceInterval"),
    )


#: Batch's "unlimited" duration (TimeSpan.MaxValue) and anything as long: no limit.
UNLIMITED_SPAN = timedelta(days=10675199)


@dataclass(frozen=True, slots=True)
class Plan:
    """What the schedule should do at `now`."""

    #: due time of the occurrence whose window is open now and that has no job yet (create one if none is active)
    due: datetime | None
    #: nextRunTime: the earliest occurrence without a job whose window has not closed
    next_run: datetime | None
    #: when to look again (None: only when the schedule's job ends or the schedule changes)
    wake: datetime | None
    #: no occurrence can create a job any more: the schedule completes as soon as no job of it is active
    #: (with doNotRunAfter, not before that time has passed)
    exhausted: bool

    @classmethod
    def over(cls) -> Plan:
        return cls(due=None, next_run=None, wake=None, exhausted=True)


def _first_after(timing: Timing, moment: datetime | None) -> int:
    """The index of the first occurrence after `moment` (recurring schedules)."""
    assert timing.interval is not None
    if moment is None or moment < timing.start:
        return 0
    return (moment - timing.start) // timing.interval + 1


def window_end(timing: Timing, due: datetime) -> datetime | None:
    """When the occurrence due at `due` can no longer create a job (None: never closes)."""
    ends = [
        end
        for end in (
            due + timing.window if timing.window is not None else None,
            due + timing.interval if timing.interval is not None else None,
            timing.stop,
        )
        if end is not None
    ]
    return min(ends) if ends else None


def plan(timing: Timing, last_due: datetime | None, now: datetime) -> Plan:
    """Which occurrence is open now, which is next, and whether any is left; `last_due` had the latest job."""
    if timing.interval is None:
        if last_due is not None:
            return Plan.over()
        index = 0
    else:
        current = _first_after(timing, now) - 1  # the latest occurrence at or before now (-1: none yet)
        index = max(_first_after(timing, last_due), current)
    due = timing.start + index * timing.interval if timing.interval is not None else timing.start
    end = window_end(timing, due)
    if due <= now and end is not None and now >= end:  # this occurrence's window has closed: it is lost
        if timing.interval is None:
            return Plan.over()
        due += timing.interval
        end = window_end(timing, due)
    if timing.stop is not None and due >= timing.stop:  # no occurrence left; over once doNotRunAfter has passed
        return Plan.over() if now >= timing.stop else Plan(due=None, next_run=None, wake=timing.stop, exhausted=False)
    if due <= now:
        return Plan(due=due, next_run=due, wake=end, exhausted=False)
    return Plan(due=None, next_run=due, wake=due, exhausted=False)
