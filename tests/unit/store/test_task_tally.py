"""Task counters (store.task_tally) against a full recount, on SQLite and PostgreSQL: after randomized
inserts, guarded and batched state/result changes (some rolled back), task and job deletes, and after the
migration that fills them from existing tasks."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from alembic import command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, func, insert, select
from tests.unit.store.test_store import T0, task_row, tx

from kiln.core.task import TaskState
from kiln.scheduler.state import Effects
from kiln.store import rows
from kiln.store.database import Database, alembic_config

JOBS = ("j1", "j2")
STATES = [s.value for s in TaskState]
RESULTS = [None, "success", "failure"]
_keys = itertools.count()


def recount(conn: Connection, job_key: str) -> set[tuple[str, str | None, int, int]]:
    """What the counters replace: a GROUP BY over the job's task rows."""
    tasks = rows.tasks
    query = (
        select(tasks.c.state, tasks.c.result, func.count(), func.sum(tasks.c.required_slots))
        .where(tasks.c.job_key == job_key)
        .group_by(tasks.c.state, tasks.c.result)
    )
    return {(state, result, n, slots) for state, result, n, slots in conn.execute(query)}


def counted(conn: Connection, job_key: str) -> set[tuple[str, str | None, int, int]]:
    return {(c["state"], c["result"], c["n"], c["slots"]) for c in rows.task_counts(conn, job_key)}


class Abort(Exception):
    """Rolls a transaction back on purpose."""


change = st.tuples(st.integers(0, 50), st.sampled_from(STATES), st.sampled_from(RESULTS))
operation = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(JOBS), st.lists(st.integers(1, 4), min_size=1, max_size=6)),
    st.tuples(st.just("move"), change),
    st.tuples(st.just("batch"), st.lists(change, min_size=1, max_size=8), st.booleans()),
    st.tuples(st.just("delete"), st.integers(0, 50)),
    st.tuples(st.just("drop"), st.sampled_from(JOBS)),
)


def apply(conn: Connection, op: tuple[Any, ...]) -> None:
    current = rows.find(conn, rows.tasks, order_by=["seq"])

    def pick(index: int) -> dict[str, Any]:
        return current[index % len(current)]

    if op[0] == "add":
        rows.insert_tasks(conn, op[1], [task_row(op[1], f"t{next(_keys)}", required_slots=s) for s in op[2]], T0)
    elif not current:
        return
    elif op[0] == "move":
        index, state, result = op[1]
        row = pick(index)
        assert rows.transition(conn, rows.tasks, {"seq": row["seq"]}, row, {"state": state, "result": result})
    elif op[0] == "batch":
        effects = Effects()
        for index, state, result in op[1]:  # a task changed twice is written once, from its first state
            row = pick(index)
            effects.change_task(row, {"state": state, "result": result})
            row.update(state=state, result=result)
        effects.write_batched(conn)
        if op[2]:
            raise Abort
    elif op[0] == "delete":
        rows.delete_task(conn, pick(op[1])["seq"])
    else:
        rows.delete_job_rows(conn, op[1])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=st.lists(operation, max_size=12))
def test_counters_equal_a_recount_after_random_changes(db: Database, operations: list[tuple[Any, ...]]) -> None:
    with tx(db) as conn:
        for job_key in JOBS:
            rows.delete_job_rows(conn, job_key)
    for op in operations:
        try:
            with tx(db) as conn:
                apply(conn, op)
        except Abort:
            pass
        with tx(db) as conn:
            for job_key in JOBS:
                assert counted(conn, job_key) == recount(conn, job_key), op


def test_counted_columns_change_only_where_they_are_tallied(db: Database) -> None:
    with tx(db) as conn:
        rows.insert_tasks(conn, "j", [task_row("j", "a")], T0)
        row = rows.find(conn, rows.tasks)[0]
        with pytest.raises(ValueError):
            rows.change(conn, rows.tasks, {"seq": row["seq"]}, {"result": "success"})
        with pytest.raises(ValueError):
            rows.transition(conn, rows.tasks, {"seq": row["seq"]}, row, {"required_slots": 2})
        with pytest.raises(ValueError):
            rows.remove(conn, rows.tasks, seq=row["seq"])


def test_the_migration_counts_the_tasks_already_stored(db: Database) -> None:
    with tx(db) as conn:
        command.downgrade(alembic_config(conn), "0007_transitions")
    stored = [
        task_row("j", "a", required_slots=2),
        task_row("j", "b"),
        task_row("j", "c", state="completed", result="failure", required_slots=3),
        task_row("k", "d", state="running"),
    ]
    with tx(db) as conn:  # as the previous version wrote them: no counters
        conn.execute(insert(rows.tasks), stored)
    db.migrate()
    with tx(db) as conn:
        assert counted(conn, "j") == recount(conn, "j") == {("active", None, 2, 3), ("completed", "failure", 1, 3)}
        assert counted(conn, "k") == recount(conn, "k") == {("running", None, 1, 1)}
