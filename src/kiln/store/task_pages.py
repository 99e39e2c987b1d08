"""A job's tasks a page at a time, by index: each page seeks past the last seq of the one before (keyset),
so page 50 costs what page 1 does, and a state filter reads only the rows in those states.

Indexes: ix_tasks_job_seq (job_key, seq) for the unfiltered list, ix_tasks_job_state (job_key, state, seq)
for a state filter: both hand rows over in seq order, so nothing is sorted and LIMIT stops the read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Select, select

from kiln.store.schema import tasks


def page_query(job_key: str, states: Sequence[str] | None, after_seq: int, count: int) -> Select:
    """The job's tasks after `after_seq` in seq order, at most `count`; states: only those (None: any)."""
    query = select(tasks).where(tasks.c.job_key == job_key, tasks.c.seq > after_seq)
    if states is not None:
        query = query.where(tasks.c.state == states[0] if len(states) == 1 else tasks.c.state.in_(list(states)))
    return query.order_by(tasks.c.seq).limit(count)


def task_page(
    conn: Connection, job_key: str, states: Sequence[str] | None, after_seq: int, count: int
) -> list[dict[str, Any]]:
    if states is not None and not states:
        return []
    return [dict(row) for row in conn.execute(page_query(job_key, states, after_seq, count)).mappings()]


def explain(conn: Connection, query: Select) -> list[str]:
    """The database's plan for `query` (SQLite's EXPLAIN QUERY PLAN details, PostgreSQL's EXPLAIN lines)."""
    compiled = query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
    if conn.dialect.name == "sqlite":
        return [row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}")]
    return [row[0] for row in conn.exec_driver_sql(f"EXPLAIN {compiled}")]
