"""Jobs, schedules, pools, nodes and prep/release records a page at a time (store.lists), on SQLite and
PostgreSQL: keyset walks return exactly what the $filter predicate keeps, served by SQL or left to the
predicate, and an unfiltered page reads its key's index in order (no sort, no offset)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, select
from tests.unit.store.test_store import T0, job_row, node_row, pool_row, tx

from kiln.api import odata, render
from kiln.core import preparation as prep_rules
from kiln.store import lists, rows, seek
from kiln.store.database import Database
from kiln.store.task_pages import explain

BASE = "http://kiln"
JOB_TEXTS = [
    "",
    "state eq 'active'",
    "startswith(id,'Job-1')",
    "id eq 'job-3'",
    "id eq 'Job-3'",
    "creationTime ge '2025-03-01T08:00:05Z'",
    "executionInfo/endTime eq null",
    "executionInfo/poolId eq 'p' and state ne 'active'",  # poolId: the predicate
]
POOL_TEXTS = ["", "state eq 'active'", "allocationState eq 'resizing'", "startswith(id,'pool-1')", "vmSize eq 'x'"]
NODE_TEXTS = ["", "allocationTime gt '2025-03-01T08:00:03Z'", "state eq 'idle'", "state eq 'running'"]
PREP_TEXTS = [
    "",
    "nodeId eq 'n2'",
    "jobPreparationTaskExecutionInfo/exitCode eq 1",
    "jobPreparationTaskExecutionInfo/state eq 'completed'",  # left out while pending: the predicate
    "jobReleaseTaskExecutionInfo/state eq 'running' or poolId eq 'p'",
]


@pytest.fixture
def stored(db: Database) -> Database:
    with tx(db) as conn:
        rows.insert_rows(
            conn,
            rows.pools,
            [pool_row(f"pool-{i}", id=f"Pool-{i}", allocation_state=("steady", "resizing")[i % 2]) for i in range(12)]
            + [pool_row()],
        )
        rows.insert_rows(
            conn,
            rows.jobs,
            [
                job_row(
                    f"job-{i}",
                    seq=i + 1,
                    id=f"Job-{i}",
                    state=("active", "completed")[i % 2],
                    creation_time=T0 + timedelta(seconds=i),
                    end_time=T0 if i % 2 else None,
                )
                for i in range(15)
            ],
        )
        rows.insert_rows(
            conn, rows.nodes, [node_row(f"n{i}", allocation_time=T0 + timedelta(seconds=i)) for i in range(8)]
        )
        records = [prep_rules.new_record("job-1", "p", f"n{i}", 0) for i in range(8)]
        for i, record in enumerate(records):
            if i % 4:  # one in four has not started: not listed
                record.update(prep_state=("running", "completed")[i % 2], prep_exit_code=i % 3, prep_start_time=T0)
        rows.insert_rows(conn, rows.preparations, records)
    return db


def _walk(page: Callable[[Any], seek.Page], first: Any) -> list[Any]:
    walked, after = [], first
    while True:
        current = page(after)
        assert len(current.rows) <= 2
        walked += current.rows
        if current.after is None:
            return walked
        after = current.after


def _check(
    conn: Connection, texts: list[str], allowed, everything: list[Any], doc, pages, first: Any, key: str
) -> None:
    for text in texts:
        matches = odata.compile_filter(text, allowed)
        term = odata.filter_terms(text, allowed)
        keep = lambda row, matches=matches: matches(doc(row))  # noqa: E731
        walked = _walk(lambda after, term=term, keep=keep: pages(conn, term, after, 2, keep), first)
        assert [r[key] for r in walked] == [r[key] for r in everything if keep(r)], text


def test_jobs_walk(stored: Database) -> None:
    with tx(stored) as conn:
        everything = rows.find(conn, rows.jobs, order_by=["seq"])
        _check(
            conn,
            JOB_TEXTS,
            odata.JOB_FILTERS,
            everything,
            lambda r: render.job(r, BASE),
            lists.job_page,
            0,
            "key",
        )


def test_pools_walk(stored: Database) -> None:
    with tx(stored) as conn:
        everything = rows.find(conn, rows.pools, order_by=["key"])
        doc = lambda r: render.pool(r, BASE, (0, 0))  # noqa: E731
        _check(conn, POOL_TEXTS, odata.POOL_FILTERS, everything, doc, lists.pool_page, "", "key")


def test_nodes_walk(stored: Database) -> None:
    with tx(stored) as conn:
        pool = rows.get(conn, rows.pools, key="p")
        everything = rows.find(conn, rows.nodes, order_by=["id"], pool_key="p")
        doc = lambda r: render.node(r, pool, BASE, 0, 0)  # noqa: E731

        def pages(conn, term, after, count, keep):
            return lists.node_page(conn, "p", term, after, count, keep)

        _check(conn, NODE_TEXTS, odata.NODE_FILTERS, everything, doc, pages, "", "id")


def test_preparation_records_walk(stored: Database) -> None:
    with tx(stored) as conn:
        job = rows.get(conn, rows.jobs, key="job-1")
        job["spec"] = {**job["spec"], "jobPreparationTask": {"id": "prep"}}
        found = rows.find(conn, rows.preparations, order_by=["node_id"], job_key="job-1")
        everything = [r for r in found if r["prep_state"] != "pending" or r["release_state"] != "pending"]
        assert 0 < len(everything) < len(found)
        doc = lambda r: render.preparation_status(r, job, BASE)  # noqa: E731

        def pages(conn, term, after, count, keep):
            return lists.preparation_page(conn, "job-1", term, after, count, keep)

        _check(conn, PREP_TEXTS, odata.PREP_RELEASE_FILTERS, everything, doc, pages, "", "node_id")


@pytest.mark.parametrize(
    ("table", "key", "scope"),
    [
        (rows.jobs, "seq", {}),
        (rows.jobs, "seq", {"schedule_key": "s"}),
        (rows.job_schedules, "seq", {}),
        (rows.pools, "key", {}),
        (rows.nodes, "id", {"pool_key": "p"}),
        (rows.preparations, "node_id", {"job_key": "job-1"}),
    ],
)
def test_an_unfiltered_page_reads_its_keys_index_in_order(stored: Database, table, key: str, scope) -> None:
    column = table.c[key]
    after = 0 if key == "seq" else ""
    query = select(table).where(*(table.c[name] == value for name, value in scope.items()), column > after)
    with tx(stored) as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        plan = "\n".join(explain(conn, query.order_by(column).limit(3)))
    if conn.dialect.name == "sqlite":
        assert "TEMP B-TREE" not in plan and "INDEX" in plan, plan
    else:
        assert "Sort" not in plan and "Index" in plan, plan
