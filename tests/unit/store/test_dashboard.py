"""kiln.store.dashboard on SQLite and PostgreSQL: paging by key, the filters, the timeline's window, a node's
recent tasks; and on SQLite, that each query reads through an index, never the job's whole task list sorted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event

from kiln.store import dashboard as queries
from kiln.store import rows
from kiln.store.database import Database

from .test_store import job_row

T0 = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
N = 130
STATES = ("active", "preparing", "running", "completed")


def _task(job_key: str, i: int) -> dict[str, Any]:
    """Task i: every third completed (exit code i % 2: 0 succeeded, 1 failed), every fifth other running."""
    completed, running = i % 3 == 0, i % 3 != 0 and i % 5 == 0
    started = T0 + timedelta(seconds=i) if completed or running else None
    return {
        "job_key": job_key,
        "key": f"t{i}",
        "id": f"t{i}",
        "spec": {},
        "state": "completed" if completed else "running" if running else "active",
        "state_transition_time": T0,
        "required_slots": 1,
        "max_retries": 0,
        "node_id": f"n{i % 2}" if started else None,
        "start_time": started,
        "end_time": started + timedelta(seconds=2) if completed and started else None,
        "exit_code": i % 2 if completed else None,
        "result": ("success" if i % 2 == 0 else "failure") if completed else None,
        "creation_time": T0,
        "last_modified": T0,
        "etag": rows.new_etag(),
    }


@pytest.fixture
def job(db: Database) -> str:
    with db.engine.begin() as conn:
        rows.insert_rows(conn, rows.jobs, [job_row("j"), job_row("other", seq=2)])
        rows.insert_rows(conn, rows.tasks, [_task("j", i) for i in range(N)])
        rows.insert_rows(conn, rows.tasks, [_task("other", i) for i in range(5)])
    return "j"


def _ids(found: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for r in found]


def _all_pages(conn: Any, match: queries.TaskMatch, size: int) -> list[str]:
    """Page forward to the end, then back to the start; both ways must give every match once, in order."""
    forward, after = [], None
    while True:
        page = queries.task_page(conn, match, after=after, size=size)
        forward += _ids(page[:size])
        if len(page) <= size:
            break
        after = page[size - 1]["seq"]
    backward, before = [], page[-1]["seq"] + 1 if page else None
    while before is not None:
        page = queries.task_page(conn, match, before=before, size=size)
        backward = _ids(page[-size:]) + backward
        before = page[-size]["seq"] if len(page) > size else None
    assert backward == forward
    return forward


def test_paging_by_key_gives_every_matching_task_once_in_the_order_added(db: Database, job: str) -> None:
    with db.engine.begin() as conn:
        assert _all_pages(conn, queries.TaskMatch(job, STATES), 17) == [f"t{i}" for i in range(N)]
        failed = queries.TaskMatch(job, ("completed",), "failure")
        assert _all_pages(conn, failed, 7) == [f"t{i}" for i in range(N) if i % 3 == 0 and i % 2 == 1]
        assert queries.count_tasks(conn, failed) == len([i for i in range(N) if i % 3 == 0 and i % 2 == 1])
        running = queries.TaskMatch(job, ("running",))
        assert _all_pages(conn, running, 50) == [f"t{i}" for i in range(N) if i % 3 != 0 and i % 5 == 0]
        assert queries.count_tasks(conn, queries.TaskMatch(job, STATES)) == N  # not the other job's


def test_the_exit_code_filter_and_its_choices(db: Database, job: str) -> None:
    with db.engine.begin() as conn:
        completed = [i for i in range(N) if i % 3 == 0]
        assert queries.exit_codes(conn, job) == [
            (0, len([i for i in completed if i % 2 == 0])),
            (1, len([i for i in completed if i % 2 == 1])),
        ]
        exit_one = queries.TaskMatch(job, STATES, exit_code=1)
        assert _ids(queries.task_page(conn, exit_one, size=1000)) == [f"t{i}" for i in completed if i % 2 == 1]


def test_the_timeline_reads_the_latest_tasks_started_before_its_end(db: Database, job: str) -> None:
    with db.engine.begin() as conn:
        until = T0 + timedelta(seconds=60)
        found = queries.started_tasks(conn, job, until, 4)
        started = [i for i in range(N) if (i % 3 == 0 or i % 5 == 0) and i < 60]
        assert _ids(found) == [f"t{i}" for i in sorted(started, reverse=True)[:4]]


def test_a_nodes_tasks_are_those_on_it_then_the_latest_completed(db: Database, job: str) -> None:
    with db.engine.begin() as conn:
        found = queries.node_tasks(conn, "n1", 3)
        on_node = [f"t{i}" for i in range(N) if i % 2 == 1 and i % 3 != 0 and i % 5 == 0]
        latest = [f"t{i}" for i in range(N - 1, -1, -1) if i % 2 == 1 and i % 3 == 0]
        assert _ids(found) == on_node + ["t3"] + latest[:2]  # the other job's t3 was added last
        assert [r["job_key"] for r in found[len(on_node) :]] == ["other", "j", "j"]


@pytest.mark.parametrize("backend", ["sqlite"])  # the plan checked is SQLite's (the default store)
def test_every_query_reads_through_an_index_without_sorting_the_job(db: Database, job: str) -> None:
    """What keeps a page as fast at 100,000 tasks as at 100: no scan of the table, no sort of the job's rows."""
    statements: list[tuple[str, Any]] = []

    def capture(conn, cursor, statement, parameters, context, executemany) -> None:
        statements.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", capture)
    try:
        with db.engine.begin() as conn:
            queries.task_page(conn, queries.TaskMatch(job, STATES), after=50)
            queries.task_page(conn, queries.TaskMatch(job, ("completed",), "failure"), before=90)
            queries.started_tasks(conn, job, T0 + timedelta(hours=1), 10)
            queries.node_tasks(conn, "n1", 10)
    finally:
        event.remove(db.engine, "before_cursor_execute", capture)
    assert len(statements) == 4 + 1 + 1 + 2
    with db.engine.begin() as conn:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        for statement, parameters in statements:
            plan = " | ".join(row[-1] for row in cursor.execute(f"EXPLAIN QUERY PLAN {statement}", parameters))
            assert "USING" in plan and "TEMP B-TREE" not in plan, plan
            assert "SCAN tasks" not in plan.replace("SCAN tasks USING", ""), plan
