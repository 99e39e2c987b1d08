"""The dashboard's reads: a page of a job's tasks, a window of its timeline, a node's recent tasks.

Each reads a bounded number of rows through an index, so a job of 100,000 tasks costs the same as one of 100.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from kiln.store.schema import tasks

Row = dict[str, Any]

#: What a listed task shows (not its spec, the largest column).
LISTED = (
    "seq",
    "id",
    "state",
    "node_id",
    "exit_code",
    "result",
    "start_time",
    "end_time",
    "retry_count",
    "requeue_count",
    "required_slots",
)
_columns = [tasks.c[name] for name in LISTED]


@dataclass(frozen=True, slots=True)
class TaskMatch:
    """Which of a job's tasks to read: in one of these states, and with this result and exit code (None: any)."""

    job_key: str
    states: tuple[str, ...]
    result: str | None = None
    exit_code: int | None = None

    def where(self, states: tuple[str, ...]) -> list[Any]:
        where = [tasks.c.job_key == self.job_key]
        where.append(tasks.c.state == states[0] if len(states) == 1 else tasks.c.state.in_(states))
        if self.result is not None:
            where.append(tasks.c.result == self.result)
        if self.exit_code is not None:
            where.append(tasks.c.exit_code == self.exit_code)
        return where


def task_page(
    conn: Connection, match: TaskMatch, *, after: int | None = None, before: int | None = None, size: int = 50
) -> list[Row]:
    """Up to `size` + 1 of the matching tasks in the order they were added, after (or before) a seq (the extra
    row says there are more). One read per state, merged: ix_tasks_job_state holds a job's tasks of one state
    in seq order, so each read stops after size + 1 entries, on the last page as on the first."""
    found: list[Row] = []
    for state in match.states:
        query = select(*_columns).where(*match.where((state,)))
        if before is not None:
            query = query.where(tasks.c.seq < before).order_by(tasks.c.seq.desc())
        else:
            query = query.where(tasks.c.seq > (after if after is not None else -1)).order_by(tasks.c.seq)
        found += [dict(r) for r in conn.execute(query.limit(size + 1)).mappings()]
    found.sort(key=lambda row: row["seq"])
    return found[-(size + 1) :] if before is not None else found[: size + 1]


def count_tasks(conn: Connection, match: TaskMatch) -> int:
    query = select(func.count()).select_from(tasks).where(*match.where(match.states))
    return conn.execute(query).scalar_one()


def exit_codes(conn: Connection, job_key: str) -> list[tuple[int, int]]:
    """(exit code, how many tasks ended with it) of the job's completed tasks: the filter's choices."""
    query = (
        select(tasks.c.exit_code, func.count())
        .where(tasks.c.job_key == job_key, tasks.c.state == "completed", tasks.c.exit_code.is_not(None))
        .group_by(tasks.c.exit_code)
        .order_by(tasks.c.exit_code)
    )
    return [(code, n) for code, n in conn.execute(query)]


def started_tasks(conn: Connection, job_key: str, until: datetime, limit: int) -> list[Row]:
    """The job's latest `limit` tasks that started before `until`, latest first (ix_tasks_job_start)."""
    query = (
        select(*_columns)
        .where(tasks.c.job_key == job_key, tasks.c.start_time.is_not(None), tasks.c.start_time < until)
        .order_by(tasks.c.start_time.desc())
        .limit(limit)
    )
    return [dict(r) for r in conn.execute(query).mappings()]


def node_tasks(conn: Connection, node_id: str, limit: int) -> list[Row]:
    """The tasks on a node now (no more than its slots), then those that last completed there, by the node index
    (node_id, state): within one state its entries are in seq order, so the latest come without a sort."""
    columns = [*_columns, tasks.c.job_key]
    on_node = select(*columns).where(tasks.c.node_id == node_id, tasks.c.state.in_(["preparing", "running"]))
    done = (
        select(*columns)
        .where(tasks.c.node_id == node_id, tasks.c.state == "completed")
        .order_by(tasks.c.seq.desc())
        .limit(limit)
    )
    now = sorted((dict(r) for r in conn.execute(on_node).mappings()), key=lambda row: row["seq"])
    return now + [dict(r) for r in conn.execute(done).mappings()]
