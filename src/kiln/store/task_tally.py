"""Exact task counts kept as counter rows (schema.task_counts), never counted over a job's tasks.

Every write that adds, moves or removes a task row tells a Tally how each (job, state, result) group
changes; Tally.write adds the net changes of the whole batch in one executemany upsert, so a transaction
that ends a thousand tasks of one job touches two counter rows. The counters live in the same transaction
as the task rows: a rollback takes both back.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, bindparam, delete, select

from kiln.store.prepared import Prepared, upsert_base
from kiln.store.schema import task_counts

#: a group's key: (job_key, state, result or "")
Group = tuple[str, str, str]


class Tally:
    """Net changes to the counters, by group: (tasks, slots)."""

    def __init__(self) -> None:
        self._changes: dict[Group, list[int]] = defaultdict(lambda: [0, 0])

    def add(self, job_key: str, state: str, result: str | None, slots: int, sign: int = 1) -> None:
        change = self._changes[(job_key, state, result or "")]
        change[0] += sign
        change[1] += sign * slots

    def add_rows(self, rows: Iterable[Mapping[str, Any]], sign: int = 1) -> None:
        """Task rows that appear (1) or go (-1)."""
        for row in rows:
            self.add(row["job_key"], row["state"], row.get("result"), row["required_slots"], sign)

    def move(self, row: Mapping[str, Any], state: str, result: str | None) -> None:
        """A task row (as it was) now in `state` with `result`."""
        self.shift(row["job_key"], row["required_slots"], (row["state"], row.get("result")), (state, result))

    def shift(self, job_key: str, slots: int, before: tuple[str, str | None], after: tuple[str, str | None]) -> None:
        """A task of `slots` moved from (state, result) `before` to `after`."""
        if before[0] != after[0] or (before[1] or "") != (after[1] or ""):
            self.add(job_key, before[0], before[1], slots, -1)
            self.add(job_key, after[0], after[1], slots)

    def write(self, conn: Connection) -> None:
        params = [
            {"job_key": job_key, "state": state, "result": result, "tasks": n, "slots": slots}
            for (job_key, state, result), (n, slots) in self._changes.items()
            if n or slots
        ]
        self._changes.clear()
        if params:
            _upsert(conn.dialect.name).execute_many(conn, params)


@functools.cache
def _upsert(dialect: str) -> Prepared:
    """Add to a group's counters, creating its row at the first task."""
    statement = upsert_base(task_counts, dialect)
    return Prepared(
        statement.on_conflict_do_update(
            index_elements=[task_counts.c.job_key, task_counts.c.state, task_counts.c.result],
            set_={
                "tasks": task_counts.c.tasks + statement.excluded.tasks,
                "slots": task_counts.c.slots + statement.excluded.slots,
            },
        )
    )


_READ = Prepared(
    select(task_counts.c.state, task_counts.c.result, task_counts.c.tasks, task_counts.c.slots).where(
        task_counts.c.job_key == bindparam("job_key")
    )
)


def read(conn: Connection, job_key: str) -> list[dict[str, Any]]:
    """The job's non-empty groups: state, result (None: none), n (tasks) and slots."""
    return [
        {"state": row["state"], "result": row["result"] or None, "n": row["tasks"], "slots": row["slots"]}
        for row in _READ.rows(conn, {"job_key": job_key})
        if row["tasks"]
    ]


def forget_job(conn: Connection, job_key: str) -> None:
    """A deleted job's counters, with its task rows."""
    conn.execute(delete(task_counts).where(task_counts.c.job_key == job_key))
