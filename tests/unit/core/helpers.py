"""Shared data for the lifecycle tests: fixed times, read-only rows and the (from, to) grid."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from sqlalchemy import Table

#: When the row last changed state; becomes previous_state_transition_time.
T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
#: The time of the event under test.
NOW = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)


def pairs(states: Iterable[StrEnum]) -> list[tuple[StrEnum, StrEnum]]:
    """Every (from, to) pair, so a test covers the whole table, edges and non-edges alike."""
    states = list(states)
    return list(itertools.product(states, states))


def pair_id(pair: tuple[StrEnum, StrEnum]) -> str:
    return f"{pair[0].value}->{pair[1].value}"


def frozen(row: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only view: a handler that writes to the row it was given fails loudly."""
    return MappingProxyType(dict(row))


def apply(row: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """What the store would hold after `changes` (rows.change) are applied."""
    return {**row, **changes}


def assert_stored_columns(changes: Mapping[str, Any], table: Table) -> None:
    """Every change names a column of the table the caller writes it to."""
    unknown = set(changes) - set(table.c.keys())
    assert not unknown, f"changes name columns {sorted(unknown)} that {table.name} does not have"
