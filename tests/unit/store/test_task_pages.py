"""Task list pages by index (store.task_pages, store.seek), on SQLite and PostgreSQL: a keyset walk returns
exactly what the $filter predicate keeps, whether the store serves the filter or leaves part of it to the
predicate; and for each filter the store serves, a plan that reads an index, never the whole tasks table."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Connection
from tests.unit.store.test_store import T0, task_row, tx

from kiln.api import odata, render
from kiln.store import rows, seek
from kiln.store.database import Database
from kiln.store.task_pages import explain, page_query, task_page

STATES = ("active", "preparing", "running", "completed")

#: filters the store serves from its columns and indexes alone
SERVED = [
    "",
    "state eq 'completed'",
    "State eq 'Active'",
    "state ne 'active'",
    "state eq 'active' or state eq 'running'",
    "not (state eq 'completed')",
    "executionInfo/result eq 'failure'",
    "executionInfo/result eq 'Success' and state eq 'completed'",
    "executionInfo/exitCode eq 0",
    "executionInfo/exitCode ne 0",
    "executionInfo/exitCode gt 0",
    "executionInfo/exitCode le -1 and executionInfo/result eq 'failure'",
    "executionInfo/exitCode eq null",
    "id eq 'Alpha-5'",
    "id eq 'alpha-5'",
    "startswith(id,'Alpha')",
    "startswith(id,'beta-1') eq false",
    "creationTime gt '2025-03-01T08:00:20Z'",
    "creationTime ge datetime'2025-03-01T08:00:20.0000000Z' and creationTime lt '2025-03-01T08:00:30Z'",
    "stateTransitionTime le '2025-03-01T08:00:10Z'",
    "lastModified ne '2025-03-01T08:00:00Z'",
    "executionInfo/startTime ge '2025-03-01T08:00:30Z'",
    "executionInfo/endTime lt '2025-03-01T08:01:00Z' and state eq 'completed'",
]
#: filters with a part no column holds as the wire compares it: the predicate decides that part
LEFT_TO_THE_PREDICATE = [
    "executionInfo/exitCode eq '1'",  # a string literal: the predicate compares the code's text
    "id gt 'beta'",  # the database's collation is not the wire's order
    "creationTime gt '2025-03-01T08:00:20.0000001Z'",  # finer than the store keeps times
    "state eq 'completed' and id lt 'b'",
    "id lt 'b' or executionInfo/exitCode eq 0",
    "executionInfo/exitCode eq 99",  # served, and matches nothing
    "id ge 'zzz'",  # matches nothing: pages come back empty with a continuation until the end
]


@pytest.fixture
def stored(db: Database) -> Database:
    """Three jobs' tasks, states interleaved in seq order; completed ones with results and exit codes."""
    with tx(db) as conn:
        for job in ("a", "b", "c"):
            made = []
            for i in range(40):
                state = STATES[i % 4]
                done = state == "completed"
                code = (0, 1, -2)[i % 3] if done else None
                moment = T0 + timedelta(seconds=i)
                made.append(
                    task_row(
                        job,
                        f"{'alpha' if i % 2 else 'beta'}-{i}",
                        id=f"{'Alpha' if i % 2 else 'beta'}-{i}",
                        state=state,
                        state_transition_time=moment if i % 5 else T0,
                        creation_time=moment,
                        last_modified=moment,
                        start_time=moment if state in ("running", "completed") else None,
                        end_time=moment + timedelta(seconds=5) if done else None,
                        exit_code=code,
                        result=None if code is None else ("success" if code == 0 else "failure"),
                    )
                )
            rows.insert_tasks(conn, job, made, T0)
    return db


def _doc(row: dict[str, Any]) -> dict[str, Any]:
    return render.task({**row, "retry_count": 0, "requeue_count": 0}, "b", "http://kiln")


@pytest.mark.parametrize("page_size", [1, 7, 1000])
def test_keyset_pages_return_what_the_filter_keeps(
    stored: Database, page_size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(seek, "EXAMINE", 5)  # a page with a predicate stops early: walking still finds all
    monkeypatch.setattr(seek, "SPAN", 7)  # so does one that no index narrows
    with tx(stored) as conn:
        everything = rows.find(conn, rows.tasks, order_by=["seq"], job_key="b")
        for text in SERVED + LEFT_TO_THE_PREDICATE:
            assert _walk(conn, text, page_size, everything) == _expected(text, everything), text


def _expected(text: str, everything: list[dict[str, Any]]) -> list[str]:
    matches = odata.compile_filter(text, odata.TASK_FILTERS)
    return [r["key"] for r in everything if matches(_doc(r))]


def _walk(conn: Connection, text: str, page_size: int, everything: list[dict[str, Any]]) -> list[str]:
    matches = odata.compile_filter(text, odata.TASK_FILTERS)
    term = odata.filter_terms(text, odata.TASK_FILTERS)
    walked, after, pages = [], 0, 0
    while True:
        page = task_page(conn, "b", term, after, page_size, lambda r: matches(_doc(r)))
        assert len(page.rows) <= page_size
        walked += [r["key"] for r in page.rows]
        pages += 1
        if page.after is None:
            break
        assert page.after > after
        after = page.after
    assert pages <= len(everything) + everything[-1]["seq"] // 5 + 2  # a page, or a span or examined rows, each
    return walked


@pytest.mark.parametrize(
    ("text", "narrowed"),
    [
        ("", True),
        ("state eq 'completed'", True),
        ("executionInfo/exitCode eq 1 and creationTime gt '2025-03-01T08:00:00Z'", True),
        ("id eq 'Alpha-5'", True),
        ("executionInfo/exitCode gt 0", False),
        ("state eq 'completed' or state eq 'active'", False),
        ("executionInfo/exitCode eq '1'", False),  # not in SQL: no index narrows it
    ],
)
def test_a_page_no_index_narrows_looks_a_span_of_seqs_on(
    stored: Database, text: str, narrowed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Job b's tasks come after job a's 40 seqs: a span of 10 from the start finds none of them, and says
    where to go on; an equality an index serves finds its rows wherever they are."""
    monkeypatch.setattr(seek, "SPAN", 10)
    matches = odata.compile_filter(text, odata.TASK_FILTERS)
    with tx(stored) as conn:
        page = task_page(conn, "b", odata.filter_terms(text, odata.TASK_FILTERS), 0, 5, lambda r: matches(_doc(r)))
    assert (page.rows != []) is narrowed
    if not narrowed:
        assert page.after == 10


def test_each_served_filter_seeks_in_an_index(stored: Database) -> None:
    """No full scan of the tasks table."""
    with tx(stored) as conn:
        after = rows.find(conn, rows.tasks, order_by=["seq"], job_key="b")[10]["seq"]
        for text in SERVED:
            _check_plan(conn, text, after)


def _check_plan(conn: Connection, text: str, after: int) -> None:
    query, left = page_query("b", odata.filter_terms(text, odata.TASK_FILTERS))
    assert not left, text
    plan = _plan(conn, query.where(rows.tasks.c.seq > after).order_by(rows.tasks.c.seq).limit(51))
    text_plan = "\n".join(plan)
    if conn.dialect.name == "sqlite":
        assert all(not line.startswith("SCAN") for line in plan), text_plan
        assert any(line.startswith("SEARCH tasks USING") and "INDEX" in line for line in plan), text_plan
    else:
        assert "Seq Scan" not in text_plan and "Index" in text_plan and "tasks" in text_plan, text_plan


@pytest.mark.parametrize(
    "text", ["state eq 'completed'", "executionInfo/result eq 'failure'", "executionInfo/exitCode eq 1"]
)
def test_an_equality_reads_its_index_in_seq_order(stored: Database, text: str) -> None:
    """With an equality on state, result or exit code the rows come in seq order from the index: nothing is
    sorted, and LIMIT stops the read."""
    query, _ = page_query("b", odata.filter_terms(text, odata.TASK_FILTERS))
    with tx(stored) as conn:
        plan = _plan(conn, query.where(rows.tasks.c.seq > 3).order_by(rows.tasks.c.seq).limit(51))
        text_plan = "\n".join(plan)
        if conn.dialect.name == "sqlite":
            assert "TEMP B-TREE" not in text_plan, text_plan
            assert "USING INDEX ix_tasks_job_" in text_plan, text_plan
        else:
            assert "Sort" not in text_plan and "Index Scan using ix_tasks_job_" in text_plan, text_plan


def _plan(conn: Connection, query) -> list[str]:
    """PostgreSQL would rightly scan a table this small: tell it to plan as for a large one."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
    return explain(conn, query)
