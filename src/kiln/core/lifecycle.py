"""The shared shape of every lifecycle: a table {(from, to): handler} and one `transition` function."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

from kiln import story
from kiln.errors import InvalidTransition

#: Column changes to apply to a stored row.
Changes = dict[str, Any]
#: A handler: (row, now, event details) -> changes beyond the state columns.
Handler = Callable[..., Changes]
Table = Mapping[tuple[StrEnum, StrEnum], Handler]


def transition(
    table: Table,
    row: Mapping[str, Any],
    to: StrEnum,
    now: datetime,
    conflict_code: str = "OperationInvalidForCurrentState",
    *,
    state_field: str = "state",
    track_previous: bool = True,
    kind: str | None = None,
    refuse: Callable[[str, Any], InvalidTransition] | None = None,
    **event: Any,
) -> Changes:
    """Changes that move `row` to state `to`, or InvalidTransition if the table has no such edge: `refuse(its
    state, to)` where the kind words its refusals itself, else one with `conflict_code`.
    With a `kind` (task, job, node, prep, release) the transition is noted for the object's story."""
    state_type = type(to)
    current = state_type(row[state_field])
    handler = table.get((current, to))
    if handler is None:
        if refuse is not None:
            raise refuse(current.value, to)
        raise InvalidTransition(
            f"The operation is not allowed while the object is in state '{current}'.", code=conflict_code
        )
    changes = handler(row, now, **event)
    changes[state_field] = to.value
    if track_previous:
        changes.update(
            previous_state=current.value,
            state_transition_time=now,
            previous_state_transition_time=row.get("state_transition_time"),
            last_modified=now,
        )
    if kind is not None:
        story.note(kind, row, current.value, to.value, changes, event, now)
    return changes


def no_changes(row: Mapping[str, Any], now: datetime, **_: Any) -> Changes:
    return {}
