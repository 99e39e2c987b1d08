"""`$select` on a task list trims the columns the store reads (store.task_pages with api.render.task_columns),
on SQLite and PostgreSQL: the SELECT issued names only the columns the selected properties are rendered
from, and each property rendered from a trimmed row is what the whole row renders."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event
from tests.unit.store.test_store import T0, task_row, tx

from kiln.api import odata, render
from kiln.api.selection import SELECTABLE
from kiln.store import rows
from kiln.store.database import Database
from kiln.store.task_pages import task_page

BASE = "http://kiln"


@pytest.fixture
def stored(db: Database) -> Database:
    """Tasks with every column the renderer reads set on some of them: a run on a node, a previous state,
    retries and requeues, a failure."""
    made = []
    for i in range(6):
        moment = T0 + timedelta(seconds=i)
        ran = i % 2 == 1
        made.append(
            {
                **task_row(
                    "j",
                    f"t-{i}",
                    id=f"T-{i}",
                    state="completed" if ran else "active",
                    state_transition_time=moment,
                    creation_time=T0,
                    last_modified=moment,
                    node_id="node-1" if ran else None,
                    start_time=moment if ran else None,
                    end_time=moment + timedelta(seconds=2) if ran else None,
                    exit_code=3 if ran else None,
                    result="failure" if ran else None,
                    failure_info={"category": "UserError", "code": "FailureExitCode"} if ran else None,
                ),
                "spec": {"commandLine": f"echo {i}", "displayName": f"task {i}", "requiredSlots": 1},
                "pool_id": "p" if ran else None,
                "previous_state": "running" if ran else None,
                "previous_state_transition_time": T0 if ran else None,
                "retry_count": i,
                "requeue_count": 1,
                "last_retry_time": moment if i else None,
                "last_requeue_time": moment,
            }
        )
    with tx(db) as conn:
        rows.insert_tasks(conn, "j", made, T0)
    return db


@pytest.fixture
def selects(stored: Database) -> Iterator[list[str]]:
    """The column lists of the SELECTs from the tasks table issued meanwhile."""
    issued: list[str] = []

    def record(conn, cursor, statement: str, parameters, context, executemany) -> None:
        found = re.match(r"\s*SELECT (.*?)\s+FROM tasks\b", statement, re.S)
        if found:
            issued.append(found.group(1))

    event.listen(stored.engine, "before_cursor_execute", record)
    yield issued
    event.remove(stored.engine, "before_cursor_execute", record)


def _columns(select_list: str) -> set[str]:
    return {part.strip().removeprefix("tasks.").strip('"') for part in select_list.split(",")}


@pytest.mark.parametrize(
    ("select", "columns"),
    [
        ("id,state", {"seq", "id", "state"}),
        ("id,executionInfo", {"seq", "id", *render.TASK_COLUMNS["executioninfo"]}),
        ("ID,commandLine", {"seq", "id", "spec"}),
        ("id,stats", {"seq", "id", "creation_time", "start_time"}),
    ],
)
def test_a_select_reads_only_the_columns_its_properties_come_from(
    stored: Database, selects: list[str], select: str, columns: set[str]
) -> None:
    with tx(stored) as conn:
        page = task_page(conn, "j", None, 0, 3, lambda r: True, render.task_columns(select.lower().split(",")))
    assert len(page.rows) == 3 and all(set(row) == columns for row in page.rows)
    assert selects and all(_columns(issued) == columns for issued in selects), selects


def test_without_a_select_or_with_a_part_left_to_the_predicate_every_column_is_read(
    stored: Database, selects: list[str]
) -> None:
    """The predicate renders the whole task to decide what SQL could not."""
    text = "id lt 'T-3'"  # an id range: the database's collation is not the wire's order
    matches = odata.compile_filter(text, odata.TASK_FILTERS)
    with tx(stored) as conn:
        whole = task_page(conn, "j", None, 0, 3, lambda r: True)
        left = task_page(
            conn,
            "j",
            odata.filter_terms(text, odata.TASK_FILTERS),
            0,
            6,
            lambda r: matches(render.task(r, "j", BASE)),
            render.task_columns(["id"]),
        )
    assert [r["id"] for r in left.rows] == ["T-0", "T-1", "T-2"]
    every = {column.name for column in rows.tasks.columns}
    assert set(whole.rows[0]) == every and set(left.rows[0]) == every
    assert selects and all(_columns(issued) == every for issued in selects)


@pytest.mark.parametrize("name", sorted(SELECTABLE["tasks"] - {"stats"}))
def test_each_selected_property_renders_from_a_trimmed_row_as_from_the_whole_row(stored: Database, name: str) -> None:
    """The renderer's table of columns (render.TASK_COLUMNS) holds for every property a task list may select."""
    with tx(stored) as conn:
        whole = task_page(conn, "j", None, 0, 10, lambda r: True).rows
        trimmed = task_page(conn, "j", None, 0, 10, lambda r: True, render.task_columns([name])).rows
    assert len(trimmed) == len(whole) == 6
    for full, part in zip(whole, trimmed):
        expected = _property(render.task(full, "j", BASE), name)
        assert _property(render.trimmed_task(part, "j", BASE), name) == expected, name


def _property(doc: dict[str, Any], name: str) -> Any:
    return {key: value for key, value in doc.items() if key.lower() == name}
