"""Task list pages by index (store.task_pages), on SQLite and PostgreSQL: the rows a keyset page returns,
and a plan that reads an index in seq order, never the whole tasks table, for each supported filter."""

from __future__ import annotations

import pytest
from sqlalchemy import Connection
from tests.unit.store.test_store import T0, task_row, tx

from kiln.store import rows
from kiln.store.database import Database
from kiln.store.task_pages import explain, page_query, task_page

STATES = ("active", "preparing", "running", "completed")
#: what a filter on state leaves to read: all, one state, several (`ne`, `or`)
FILTERS = [None, ["completed"], ["active"], ["active", "running"]]


@pytest.fixture
def stored(db: Database) -> Database:
    """Three jobs' tasks, states interleaved in seq order."""
    with tx(db) as conn:
        for job in ("a", "b", "c"):
            made = [task_row(job, f"t{i}", state=STATES[i % 4]) for i in range(40)]
            rows.insert_tasks(conn, job, made, T0)
    return db


@pytest.mark.parametrize("states", [None, ["completed"], ["active", "running"], []])
def test_keyset_pages_walk_the_jobs_tasks_in_order(stored: Database, states: list[str] | None) -> None:
    with tx(stored) as conn:
        everything = [r for r in rows.find(conn, rows.tasks, order_by=["seq"], job_key="b")]
        expected = [r["key"] for r in everything if states is None or r["state"] in states]
        walked, after = [], 0
        while page := task_page(conn, "b", states, after, 7):
            walked += [r["key"] for r in page]
            after = page[-1]["seq"]
        assert walked == expected


@pytest.mark.parametrize("states", FILTERS)
def test_each_filter_seeks_in_an_index_in_seq_order(stored: Database, states: list[str] | None) -> None:
    """No full scan of the tasks table, and no sort: the page's rows come in seq order and LIMIT stops the read."""
    with tx(stored) as conn:
        after = rows.find(conn, rows.tasks, order_by=["seq"], job_key="b")[10]["seq"]
        plan = _plan(conn, page_query("b", states, after, 51))
        text = "\n".join(plan)
        if conn.dialect.name == "sqlite":
            assert all(not line.startswith("SCAN") for line in plan), text
            assert any(line.startswith("SEARCH tasks USING INDEX ix_tasks_job_") and "seq>?" in line for line in plan)
            assert "TEMP B-TREE" not in text, text
        else:
            assert "Seq Scan" not in text and "Index Scan using ix_tasks_job_" in text, text
            assert "Sort" not in text, text


def _plan(conn: Connection, query) -> list[str]:
    """PostgreSQL would rightly scan a table this small: tell it to plan as for a large one."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
    return explain(conn, query)
