"""Invariants checked after every lifecycle test: the transition tables are constant data."""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum

import pytest

from kiln.core import job, node, pool, preparation, schedule, task

TABLES = {
    "task.TRANSITIONS": task.TRANSITIONS,
    "job.TRANSITIONS": job.TRANSITIONS,
    "node.TRANSITIONS": node.TRANSITIONS,
    "pool.ALLOCATION_TRANSITIONS": pool.ALLOCATION_TRANSITIONS,
    "pool.STATE_TRANSITIONS": pool.STATE_TRANSITIONS,
    "preparation.PREP_TRANSITIONS": preparation.PREP_TRANSITIONS,
    "preparation.RELEASE_TRANSITIONS": preparation.RELEASE_TRANSITIONS,
    "schedule.TRANSITIONS": schedule.TRANSITIONS,
}


@pytest.fixture(autouse=True)
def tables_unchanged() -> Iterator[None]:
    """No test (and no handler) may add, drop or replace an edge; every key is a pair of one enum's states."""
    before = {name: dict(table) for name, table in TABLES.items()}
    yield
    for name, table in TABLES.items():
        assert dict(table) == before[name], f"{name} changed during the test"
        for frm, to in table:
            assert isinstance(frm, StrEnum) and type(frm) is type(to), f"{name}: bad key {(frm, to)!r}"
            assert callable(table[(frm, to)])
