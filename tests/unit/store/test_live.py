"""What a restart rebuilds the scheduler's memory from (store.live, and the rows.* reads it shares), on SQLite
and PostgreSQL: the live rows exactly, each read through an index, never a scan of the tasks table."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Connection, event
from tests.unit.store.test_store import T0, job_row, task_row, tx

from kiln.store import live, rows
from kiln.store.database import Database

STATES = ("active", "preparing", "running", "completed")
#: (seq, key, state) of the stored jobs
JOBS = [(1, "a", "active"), (2, "old", "completed"), (3, "b", "terminating"), (4, "c", "disabled")]


@pytest.fixture
def stored(db: Database) -> Database:
    """Three jobs of 30 tasks, states interleaved in seq order, slots 1-3; a few sent ahead; instance rows of
    a completed and an unfinished multi-instance task."""
    with tx(db) as conn:
        rows.insert_rows(conn, rows.jobs, [job_row(key, seq=seq, state=state) for seq, key, state in JOBS])
        for job in ("a", "b", "c"):
            made = [
                task_row(job, f"t{i}", state=STATES[i % 4], required_slots=1 + i % 3, node_id=None) for i in range(30)
            ]
            rows.insert_tasks(conn, job, made, T0)
        active = [t for t in rows.find(conn, rows.tasks, order_by=["seq"]) if t["state"] == "active"]
        rows.mark_sent_ahead(conn, T0, [(active[0]["seq"], "n1"), (active[5]["seq"], "n2")])
        by_state = {t["state"]: t["seq"] for t in rows.find(conn, rows.tasks, job_key="b")}
        rows.insert_rows(
            conn,
            rows.subtasks,
            [
                {"task_seq": by_state[state], "id": i, "job_key": "b", "attempt": 1, "pool_id": "p", "node_id": "n1"}
                | {"state": "completed", "state_transition_time": T0}
                for state in ("completed", "running")
                for i in (1, 2)
            ],
        )
    return db


def test_queued_reads_a_jobs_active_tasks_in_parts_as_seq_and_slots(stored: Database) -> None:
    with tx(stored) as conn:
        expected = [
            (t["seq"], t["required_slots"])
            for t in rows.find(conn, rows.tasks, order_by=["seq"], job_key="b")
            if t["state"] == "active"
        ]
        parts, after = [], -1
        while part := live.queued(conn, "b", after, count=3):
            parts.append(part)
            after = part[-1][0]
        assert [entry for part in parts for entry in part] == expected == live.queued(conn, "b")
        assert [len(part) for part in parts] == [3, 3, 2]


def test_the_rebuild_reads_only_the_live_rows_of_the_jobs_it_is_given(stored: Database) -> None:
    with tx(stored) as conn:
        assert [job["key"] for job in live.unfinished_jobs(conn)] == ["a", "b", "c"]
        on_nodes = live.tasks_in_states(conn, ["a", "c"], ["preparing", "running"])
        assert {(t["job_key"], t["state"]) for t in on_nodes} == {
            (j, s) for j in "ac" for s in ("preparing", "running")
        }
        assert len(on_nodes) == 2 * 15
        assert [(t["sent_ahead_node"]) for t in rows.tasks_sent_ahead(conn)] == ["n1", "n2"]
        rows.remove_unfinished_subtasks(conn)
        left = rows.find(conn, rows.subtasks)
        assert len(left) == 2 and {rows.get(conn, rows.tasks, seq=s["task_seq"])["state"] for s in left} == {
            "completed"
        }


#: a job's tasks in a state, in seq order: SQLite must seek (job_key, state), not walk the job's (job_key, seq)
IN_STATE = "ix_tasks_job_state (job_key=? AND state=?"


def test_a_dependency_graph_is_rebuilt_from_the_uncompleted_tasks_with_the_specs_of_those_never_started(
    stored: Database,
) -> None:
    with tx(stored) as conn:
        rows.change(
            conn,
            rows.tasks,
            {"seq": rows.find(conn, rows.tasks, job_key="b", state="active")[0]["seq"]},
            {"attempt": 1},
        )
        expected = [r for r in rows.find(conn, rows.tasks, order_by=["seq"], job_key="b") if r["state"] != "completed"]
        found = live.dependency_rows(conn, "b")
        assert [(r["seq"], r["key"], r["id"], r["required_slots"], r["state"]) for r in found] == [
            (r["seq"], r["key"], r["id"], r["required_slots"], r["state"]) for r in expected
        ]
        gated = [r["spec"] if r["state"] == "active" and r["attempt"] == 0 else {} for r in expected]
        assert [r["spec"] for r in found] == gated
        assert sum(1 for spec in gated if spec) == 7  # 8 active, one of them started before


def test_a_jobs_completed_tasks_are_read_in_parts_as_tuples_without_their_specs(stored: Database) -> None:
    with tx(stored) as conn:
        expected = [
            (r["seq"], r["key"], r["id"], r["required_slots"], r["state"], r["dependency_action"])
            for r in rows.find(conn, rows.tasks, order_by=["seq"], job_key="b")
            if r["state"] == "completed"
        ]
        parts, after = [], -1
        while part := live.completed_part(conn, "b", after, 3):
            parts.append([tuple(row) for row in part])
            after = part[-1].seq
        assert [row for part in parts for row in part] == expected
        assert [len(part) for part in parts] == [3, 3, 1]


@pytest.mark.parametrize(
    ("read", "index"),
    [
        (lambda conn: live.queued(conn, "b", 5, count=10), IN_STATE),
        (lambda conn: live.tasks_in_states(conn, ["b"], ["preparing", "running"]), IN_STATE),
        (lambda conn: live.dependency_rows(conn, "b"), IN_STATE),
        (lambda conn: live.completed_part(conn, "b", 5, 10), IN_STATE),
        (lambda conn: rows.tasks_sent_ahead(conn), None),
        (lambda conn: rows.tasks_sent_ahead(conn, "n1"), None),
        (rows.remove_unfinished_subtasks, None),
        (live.unfinished_jobs, "ix_jobs_unfinished"),
    ],
    ids=[
        "queued",
        "on nodes",
        "dependencies",
        "completed",
        "sent ahead",
        "sent ahead to a node",
        "unfinished instances",
        "jobs",
    ],
)
def test_each_read_of_the_rebuild_seeks_in_an_index(
    stored: Database, read: Callable[[Connection], Any], index: str | None
) -> None:
    with tx(stored) as conn:
        with _statements(conn) as executed:
            read(conn)
        assert executed
        for statement, parameters in executed:
            plan = _plan(conn, statement, parameters)
            if index is not None and conn.dialect.name == "sqlite":
                assert any(index in line for line in plan), (statement, plan)
            # a scan of a partial index (tasks sent ahead, unfinished jobs) reads only the rows it holds
            scans = [
                line for line in plan if line.startswith(("SCAN tasks", "SCAN jobs")) and "_unfinished" not in line
            ]
            scans = [line for line in scans if "_sent_ahead" not in line]
            assert not scans and not any(f"Seq Scan on {t}" in line for line in plan for t in ("tasks", "jobs")), plan


@contextmanager
def _statements(conn: Connection) -> Iterator[list[tuple[str, Any]]]:
    """The SQL the block executes on `conn`, with its parameters."""
    executed: list[tuple[str, Any]] = []

    def record(_conn, _cursor, statement, parameters, _context, _many) -> None:
        executed.append((statement, parameters))

    event.listen(conn, "before_cursor_execute", record)
    try:
        yield executed
    finally:
        event.remove(conn, "before_cursor_execute", record)


def _plan(conn: Connection, statement: str, parameters: Any) -> list[str]:
    """PostgreSQL would rightly scan a table this small: tell it to plan as for a large one."""
    if conn.dialect.name == "sqlite":
        return [row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)]
    conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
    return [row[0] for row in conn.exec_driver_sql(f"EXPLAIN {statement}", parameters)]
