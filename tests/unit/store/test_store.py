"""kiln.store on SQLite and PostgreSQL: the migration, every query in rows, and UTC times.

Each test gets its own database (see conftest.py): `backend` parametrizes every test over both.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, select
from sqlalchemy.exc import IntegrityError

from kiln.core import job as job_rules
from kiln.core import preparation as prep_rules
from kiln.core import task as task_rules
from kiln.core.job import JobState
from kiln.core.preparation import StepState
from kiln.core.task import TaskState
from kiln.errors import StaleState
from kiln.scheduler.state import Effects, transition
from kiln.store import rows
from kiln.store.database import Database, alembic_config, sqlite_url
from kiln.store.schema import metadata
from kiln.testing import wait_for

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
T1 = datetime(2025, 3, 1, 9, 30, 15, 123456, tzinfo=UTC)
TABLES = {
    "pools",
    "nodes",
    "jobs",
    "tasks",
    "preparations",
    "subtasks",
    "task_stats",
    "usage_stats",
    "counters",
    "job_schedules",
    "transitions",
    "node_lifetimes",
    "task_counts",
    "transfers",
    "kept_dirs",
}


def pool_row(key: str = "p", **fields: Any) -> dict[str, Any]:
    row = {
        "key": key,
        "id": key,
        "spec": {"vmSize": "standard_d2s_v3"},
        "state": "active",
        "state_transition_time": T0,
        "allocation_state": "steady",
        "allocation_state_transition_time": T0,
        "target_dedicated_nodes": 1,
        "target_low_priority_nodes": 0,
        "task_slots_per_node": 2,
        "creation_time": T0,
        "last_modified": T0,
        "etag": rows.new_etag(),
    }
    return {**row, **fields}


def job_row(key: str, seq: int = 1, **fields: Any) -> dict[str, Any]:
    row = {
        "key": key,
        "id": key,
        "seq": seq,
        "spec": {"poolInfo": {"poolId": "p"}},
        "state": "active",
        "state_transition_time": T0,
        "pool_key": "p",
        "priority": 0,
        "creation_time": T0,
        "last_modified": T0,
        "etag": rows.new_etag(),
    }
    return {**row, **fields}


def task_row(job_key: str, key: str, state: str = "active", **fields: Any) -> dict[str, Any]:
    """Always the same keys: an executemany takes its columns from the first row and ignores extra keys."""
    row = {
        "job_key": job_key,
        "key": key,
        "id": key,
        "spec": {"commandLine": f"echo {key}"},
        "state": state,
        "state_transition_time": T0,
        "required_slots": 1,
        "max_retries": 0,
        "node_id": None,
        "attempt": 0,
        "start_time": None,
        "end_time": None,
        "exit_code": None,
        "result": None,
        "failure_info": None,
        "creation_time": T0,
        "last_modified": T0,
        "etag": rows.new_etag(),
    }
    assert set(fields) <= set(row), f"add {sorted(set(fields) - set(row))} to task_row's keys"
    return {**row, **fields}


def node_row(node_id: str, **fields: Any) -> dict[str, Any]:
    row = {
        "id": node_id,
        "pool_key": "p",
        "state": "idle",
        "scheduling_state": "enabled",
        "state_transition_time": T0,
        "allocation_time": T0,
        "root_dir": f"/nodes/{node_id}",
    }
    return {**row, **fields}


def tx(db: Database) -> Any:
    return db.engine.begin()


# ---------------------------------------------------------------------------------------------- migrations
def test_head_matches_metadata(empty_url: str) -> None:
    """Alembic head creates exactly what schema.metadata describes: autogenerate finds nothing to do."""
    database = Database(empty_url)
    try:
        database.migrate()
        with database.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
            assert compare_metadata(context, metadata) == []
            assert set(inspect(conn).get_table_names()) == TABLES | {"alembic_version"}
    finally:
        database.close()


def test_migrate_is_idempotent(db: Database) -> None:
    db.migrate()
    with db.engine.connect() as conn:
        head = ScriptDirectory.from_config(alembic_config(conn)).get_current_head()
        assert MigrationContext.configure(conn).get_current_revision() == head


def test_downgrade_to_base_and_back(db: Database) -> None:
    with tx(db) as conn:
        command.downgrade(alembic_config(conn), "base")
    with db.engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
    db.migrate()
    with db.engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) == TABLES | {"alembic_version"}


# ---------------------------------------------------------------------------------------------- rows
def test_insert_get_find(db: Database) -> None:
    with tx(db) as conn:
        rows.insert_rows(conn, rows.pools, [pool_row()])
        rows.insert_rows(
            conn, rows.jobs, [job_row("b", seq=2, priority=5), job_row("a", seq=1), job_row("c", seq=3, priority=5)]
        )
    with tx(db) as conn:
        got = rows.get(conn, rows.jobs, key="a")
        assert got is not None and (got["id"], got["seq"], got["state"]) == ("a", 1, "active")
        assert got["spec"] == {"poolInfo": {"poolId": "p"}}
        assert got["delete_requested"] is False  # Python-side default
        assert rows.get(conn, rows.jobs, key="nope") is None
        assert rows.get(conn, rows.jobs, key="a", state="completed") is None
        assert [r["key"] for r in rows.find(conn, rows.jobs, order_by=["seq"])] == ["a", "b", "c"]
        assert [r["key"] for r in rows.find(conn, rows.jobs, order_by=["key"], priority=5)] == ["b", "c"]
        assert rows.find(conn, rows.jobs, state="deleting") == []
        assert rows.get(conn, rows.pools, key="p")["spec"] == {"vmSize": "standard_d2s_v3"}


def test_insert_nothing(db: Database) -> None:
    with tx(db) as conn:
        rows.insert_rows(conn, rows.jobs, [])
        rows.insert_rows(conn, rows.jobs, iter(()))
        assert rows.find(conn, rows.jobs) == []


def test_defaults_of_a_new_task_and_node(db: Database) -> None:
    with tx(db) as conn:
        rows.insert_rows(conn, rows.tasks, [task_row("j", "t")])
        rows.insert_rows(conn, rows.nodes, [node_row("n")])
    with tx(db) as conn:
        task = rows.get(conn, rows.tasks, job_key="j", key="t")
        assert isinstance(task["seq"], int)
        assert (task["attempt"], task["retry_count"], task["requeue_count"]) == (0, 0, 0)
        assert (task["node_id"], task["start_time"], task["result"], task["failure_info"]) == (None, None, None, None)
        node = rows.get(conn, rows.nodes, id="n")
        assert (node["incarnation"], node["total_tasks_run"], node["running_tasks"]) == (0, 0, 0)


def test_a_transactions_task_changes_and_node_counters_are_written_together(db: Database) -> None:
    """The scheduler's batched writes (Effects.write_batched): one statement per shape of task change,
    one for every node's counters, whichever of them moved."""

    with tx(db) as conn:
        rows.insert_rows(conn, rows.tasks, [task_row("j", "a"), task_row("j", "b")])
        rows.insert_rows(conn, rows.nodes, [node_row("n1"), node_row("n2")])
        found = {t["key"]: t for t in rows.find(conn, rows.tasks)}
    effects = Effects()
    effects.change_task(found["a"], {"state": "running", "node_id": "n1"})
    effects.change_task(found["b"], {"state": "completed", "exit_code": 3})
    effects.node_counters[("n1", "total_tasks_run")] += 2
    effects.node_counters[("n1", "total_tasks_succeeded")] += 1
    effects.node_counters[("n2", "total_tasks_succeeded")] += 4
    with tx(db) as conn:
        effects.write_batched(conn, counters=False)
        assert effects.node_counters and not effects.task_changes  # kept for later in the transaction
        effects.write_batched(conn)
        effects.node_counters[("n2", "total_tasks_run")] += 1
        effects.write_batched(conn)
    with tx(db) as conn:
        tasks = {t["key"]: t for t in rows.find(conn, rows.tasks)}
        assert (tasks["a"]["state"], tasks["a"]["node_id"]) == ("running", "n1")
        assert (tasks["b"]["state"], tasks["b"]["exit_code"]) == ("completed", 3)
        counts = {n["id"]: (n["total_tasks_run"], n["total_tasks_succeeded"]) for n in rows.find(conn, rows.nodes)}
        assert counts == {"n1": (2, 1), "n2": (1, 4)}


async def test_the_batched_task_writes_refuse_a_row_whose_state_moved(db: Database) -> None:
    """Each row of the executemany is guarded: one task that moved under the scheduler aborts the whole
    transaction (StaleState; Database.write rolls back), so the others are not written either."""
    with tx(db) as conn:
        rows.insert_rows(conn, rows.tasks, [task_row("j", "a"), task_row("j", "b")])
        found = {t["key"]: t for t in rows.find(conn, rows.tasks)}
    effects = Effects()
    effects.change_task(found["a"], {"state": "running", "node_id": "n1"})
    effects.change_task(found["b"], {"state": "running", "node_id": "n1"})
    with tx(db) as conn:  # b ends meanwhile
        ended = task_rules.transition(found["b"], TaskState.COMPLETED, T1, failure_info=None)
        assert rows.transition(conn, rows.tasks, {"seq": found["b"]["seq"]}, found["b"], ended)
    with pytest.raises(StaleState):
        await db.write(effects.write_batched)
    with tx(db) as conn:
        stored = {t["key"]: t for t in rows.find(conn, rows.tasks)}
    assert (stored["a"]["state"], stored["a"]["node_id"]) == ("active", None)
    assert stored["b"]["state"] == "completed"


async def test_a_task_started_and_ended_in_one_transaction_is_guarded_by_its_first_state(db: Database) -> None:
    with tx(db) as conn:
        rows.insert_rows(conn, rows.tasks, [task_row("j", "a")])
        (task,) = rows.find(conn, rows.tasks)
    effects = Effects()
    started = task_rules.transition(task, TaskState.RUNNING, T0, pool_id="p", node_id="n1", attempt=1)
    effects.change_task(task, started)
    task.update(started)
    effects.change_task(task, task_rules.transition(task, TaskState.COMPLETED, T1, exit_code=0, failure_info=None))
    await db.write(effects.write_batched)
    with tx(db) as conn:
        stored = rows.reread(conn, rows.tasks, seq=task["seq"])
    assert (stored["state"], stored["attempt"], stored["exit_code"]) == ("completed", 1, 0)


async def test_the_schedulers_transition_raises_stale_state_and_writes_nothing(db: Database) -> None:
    with tx(db) as conn:
        rows.insert_rows(conn, rows.jobs, [job_row("j", state="disabled")])
        stored = rows.reread(conn, rows.jobs, key="j")
    remembered = {**stored, "state": "active"}  # memory missed a change
    with pytest.raises(StaleState, match="jobs"):
        await db.write(
            lambda conn: transition(
                conn, rows.jobs, {"key": "j"}, remembered, job_rules.transition(remembered, JobState.DISABLING, T1)
            )
        )
    with tx(db) as conn:
        assert rows.reread(conn, rows.jobs, key="j") == stored


def test_task_key_is_unique_within_a_job(db: Database) -> None:
    with tx(db) as conn:
        rows.insert_rows(conn, rows.tasks, [task_row("j1", "t"), task_row("j2", "t")])
    with pytest.raises(IntegrityError):
        with tx(db) as conn:
            rows.insert_rows(conn, rows.tasks, [task_row("j1", "t")])


def test_a_transition_applies_when_the_row_is_still_in_its_from_state(db: Database) -> None:
    with tx(db) as conn:
        rows.insert_rows(conn, rows.jobs, [job_row("j")])
        job = rows.reread(conn, rows.jobs, key="j")
    changes = {"state": "terminating", "terminate_reason": "x"}
    with tx(db) as conn:
        assert rows.transition(conn, rows.jobs, {"key": "j"}, job, changes) is True
    with tx(db) as conn:
        got = rows.get(conn, rows.jobs, key="j")
        assert (got["state"], got["terminate_reason"]) == ("terminating", "x")


def test_a_transition_from_a_state_the_row_has_left_writes_nothing(db: Database) -> None:
    with tx(db) as conn:
        rows.insert_rows(conn, rows.jobs, [job_row("j", state="completed")])
        before = rows.reread(conn, rows.jobs, key="j")
    with tx(db) as conn:
        seen_active = {**before, "state": "active"}
        changes = {"state": "terminating"}
        assert rows.transition(conn, rows.jobs, {"key": "j"}, seen_active, changes, bump_etag=True) is False
    with tx(db) as conn:
        assert rows.get(conn, rows.jobs, key="j") == before  # nothing written, etag included


def test_a_task_transition_is_guarded_by_the_attempt_too(db: Database) -> None:
    """A result of attempt 1 must not end attempt 2, which is running in the same state."""
    with tx(db) as conn:
        rows.insert_rows(conn, rows.tasks, [task_row("j", "t", state="running", attempt=2)])
        now_running = rows.reread(conn, rows.tasks, job_key="j", key="t")
    old_attempt = {**now_running, "attempt": 1}
    with tx(db) as conn:
        ended = task_rules.transition(old_attempt, TaskState.COMPLETED, T1, exit_code=0, failure_info=None)
        assert rows.transition(conn, rows.tasks, {"seq": now_running["seq"]}, old_attempt, ended) is False
    with tx(db) as conn:
        assert rows.get(conn, rows.tasks, seq=now_running["seq"]) == now_running


def test_a_guarded_state_is_not_changed_unguarded(db: Database) -> None:
    with tx(db) as conn:
        for table, columns in rows.STATES.items():
            for column in columns:
                with pytest.raises(ValueError, match="transition"):
                    rows.change(conn, table, {"seq": 1}, {column: "active"})
    assert set(rows.STATES) == {
        rows.tasks,
        rows.nodes,
        rows.jobs,
        rows.pools,
        rows.job_schedules,
        rows.subtasks,
        rows.preparations,
    }


def test_a_preparation_record_moves_only_from_the_states_and_attempts_it_was_computed_from(db: Database) -> None:
    """A late prep result (attempt 1) must not complete the record its retry (attempt 2) now runs."""
    with tx(db) as conn:
        rows.insert_rows(conn, rows.preparations, [prep_rules.new_record("j", "p", "n1", 0)])
        record = rows.reread(conn, rows.preparations, job_key="j", node_id="n1")
    key = {"job_key": "j", "node_id": "n1"}
    with tx(db) as conn:
        first = prep_rules.prep(record, StepState.RUNNING, T0, attempt=1)
        assert rows.transition(conn, rows.preparations, key, record, first)
        record = {**record, **first}
        second = prep_rules.prep(record, StepState.RUNNING, T1, attempt=2)
        assert rows.transition(conn, rows.preparations, key, record, second)
        stale = prep_rules.prep(record, StepState.COMPLETED, T1, exit_code=0, failure_info=None)
        assert not rows.transition(conn, rows.preparations, key, record, stale)  # still thinks attempt 1
        stored = rows.reread(conn, rows.preparations, **key)
        assert (stored["prep_state"], stored["prep_attempt"]) == ("running", 2)


def test_a_pool_moves_only_from_the_allocation_state_it_was_computed_from(db: Database) -> None:
    with tx(db) as conn:
        rows.insert_rows(conn, rows.pools, [pool_row("p")])
        pool = rows.reread(conn, rows.pools, key="p")
        resizing = {**pool, "allocation_state": "resizing"}  # what a stale copy believes
        assert not rows.transition(conn, rows.pools, {"key": "p"}, resizing, {"allocation_state": "steady"})
        assert rows.transition(conn, rows.pools, {"key": "p"}, pool, {"allocation_state": "resizing"})
        assert rows.reread(conn, rows.pools, key="p")["allocation_state"] == "resizing"


def test_tasks_sent_ahead_are_marked_per_node_until_cleared(db: Database) -> None:
    """What a restart or a lost node reads to count runs a node started unseen (scheduler/ahead.py)."""
    with tx(db) as conn:
        rows.insert_rows(conn, rows.tasks, [task_row("j", f"t{i}") for i in range(4)])
        seqs = [rows.reread(conn, rows.tasks, job_key="j", key=f"t{i}")["seq"] for i in range(4)]
        rows.mark_sent_ahead(conn, T0, [(seqs[0], "n1"), (seqs[1], "n1")])
        rows.mark_sent_ahead(conn, T1, [(seqs[2], "n2")])
    with tx(db) as conn:
        assert sorted(t["seq"] for t in rows.tasks_sent_ahead(conn)) == seqs[:3]
        on_n1 = rows.tasks_sent_ahead(conn, "n1")
        assert [(t["seq"], t["sent_ahead_node"], t["sent_ahead_at"]) for t in on_n1] == [
            (seqs[0], "n1", T0),
            (seqs[1], "n1", T0),
        ]
        rows.change(conn, rows.tasks, {"seq": seqs[0]}, {"sent_ahead_node": None, "sent_ahead_at": None})
        assert [t["seq"] for t in rows.tasks_sent_ahead(conn, "n1")] == [seqs[1]]


def test_change_of_a_missing_row(db: Database) -> None:
    with tx(db) as conn:
        assert rows.change(conn, rows.jobs, {"key": "ghost"}, {"priority": 1}) is False


def test_two_writers_from_the_same_read_one_wins(db: Database) -> None:
    """The guard is what makes read-decide-write safe: the second writer sees False."""
    with tx(db) as conn:
        rows.insert_rows(conn, rows.tasks, [task_row("j", "t")])
    with tx(db) as conn:
        seen = rows.get(conn, rows.tasks, job_key="j", key="t")
    first = task_rules.transition(seen, TaskState.RUNNING, T1, pool_id="p", node_id="n1", attempt=1)
    second = task_rules.transition(seen, TaskState.RUNNING, T1, pool_id="p", node_id="n2", attempt=1)
    with tx(db) as conn:
        assert rows.transition(conn, rows.tasks, {"seq": seen["seq"]}, seen, first)
        assert not rows.transition(conn, rows.tasks, {"seq": seen["seq"]}, seen, second)
        assert rows.get(conn, rows.tasks, seq=seen["seq"])["node_id"] == "n1"


def test_bump_etag(db: Database) -> None:
    with tx(db) as conn:
        rows.insert_rows(conn, rows.jobs, [job_row("j")])
    etags = []
    for priority in (1, 2, 3):
        with tx(db) as conn:
            assert rows.change(conn, rows.jobs, {"key": "j"}, {"priority": priority}, bump_etag=True)
            etags.append(rows.get(conn, rows.jobs, key="j")["etag"])
    assert len(set(etags)) == 3
    with tx(db) as conn:
        assert rows.change(conn, rows.jobs, {"key": "j"}, {"priority": 9})  # without bump_etag it stays
        assert rows.get(conn, rows.jobs, key="j")["etag"] == etags[-1]


def test_new_etag_shape() -> None:
    etags = [rows.new_etag() for _ in range(1000)]
    assert len(set(etags)) == len(etags)
    for etag in etags[:10]:
        assert etag.startswith("0x8D") and int(etag[2:], 16) and len(etag) <= 32
        assert '"' not in etag


def test_remove(db: Database) -> None:
    with tx(db) as conn:
        rows.insert_rows(conn, rows.nodes, [node_row("n1"), node_row("n2"), node_row("n3", pool_key="q")])
    with tx(db) as conn:
        assert rows.remove(conn, rows.nodes, id="n1") == 1
        assert rows.remove(conn, rows.nodes, id="n1") == 0
        assert rows.remove(conn, rows.nodes, pool_key="p") == 1
        assert [r["id"] for r in rows.find(conn, rows.nodes)] == ["n3"]


def test_next_value(db: Database) -> None:
    with tx(db) as conn:
        assert [rows.next_value(conn, "job") for _ in range(3)] == [1, 2, 3]
        assert rows.next_value(conn, "other") == 1
    with tx(db) as conn:  # persistent across transactions
        assert rows.next_value(conn, "job") == 4
        assert rows.next_value(conn, "other") == 2


def test_next_value_rolls_back_with_its_transaction(db: Database) -> None:
    with tx(db) as conn:
        assert rows.next_value(conn, "job") == 1
    with pytest.raises(RuntimeError):
        with tx(db) as conn:
            assert rows.next_value(conn, "job") == 2
            raise RuntimeError("abort")
    with tx(db) as conn:
        assert rows.next_value(conn, "job") == 2


def test_task_counts(db: Database) -> None:
    with tx(db) as conn:
        rows.insert_rows(
            conn,
            rows.tasks,
            [
                task_row("j", "a1"),
                task_row("j", "a2", required_slots=3),
                task_row("j", "p1", state="preparing", required_slots=2),
                task_row("j", "r1", state="running"),
                task_row("j", "s1", state="completed", result="success"),
                task_row("j", "s2", state="completed", result="success", required_slots=4),
                task_row("j", "f1", state="completed", result="failure"),
                task_row("other", "a1"),
            ],
        )
    with tx(db) as conn:
        counts = rows.task_counts(conn, "j")
        assert sorted((c["state"], c["result"] or "", c["n"], c["slots"]) for c in counts) == [
            ("active", "", 2, 4),
            ("completed", "failure", 1, 1),
            ("completed", "success", 2, 5),
            ("preparing", "", 1, 2),
            ("running", "", 1, 1),
        ]
        assert all(isinstance(c["n"], int) and isinstance(c["slots"], int) for c in counts)
        assert rows.task_counts(conn, "none") == []


def test_tasks_by_seq(db: Database) -> None:
    with tx(db) as conn:
        rows.insert_rows(conn, rows.tasks, [task_row("j", f"t{i}") for i in range(5)])
    with tx(db) as conn:
        seqs = {r["key"]: r["seq"] for r in rows.find(conn, rows.tasks)}
        assert rows.tasks_by_seq(conn, []) == []
        got = rows.tasks_by_seq(conn, [seqs["t3"], seqs["t1"], 999_999])
        assert sorted(r["key"] for r in got) == ["t1", "t3"]


def test_current_nodes_by_pool_counts_dedicated_and_low_priority_nodes(db: Database) -> None:
    with tx(db) as conn:
        rows.insert_rows(conn, rows.nodes, [node_row("d1"), node_row("d2"), node_row("q1", pool_key="q")])
        rows.insert_rows(conn, rows.nodes, [node_row("p1", is_dedicated=False)])
    with tx(db) as conn:
        assert rows.current_nodes_by_pool(conn) == {"p": (2, 1), "q": (1, 0)}
        node = rows.get(conn, rows.nodes, id="d1")
        assert node["is_dedicated"] is True and node["start_task"] is None and node["errors"] is None


def test_whether_a_pool_has_a_node_outside_some_states(db: Database) -> None:
    with tx(db) as conn:
        rows.insert_rows(conn, rows.nodes, [node_row("a"), node_row("b", state="starting"), node_row("c")])
        rows.insert_rows(conn, rows.nodes, [node_row("q", pool_key="q", state="starting")])
    with tx(db) as conn:
        assert rows.pool_has_node_outside(conn, "p", ["idle", "running"], {"a", "b"})
        assert not rows.pool_has_node_outside(conn, "p", ["idle", "running"], {"a", "c"})  # b is not among them
        assert not rows.pool_has_node_outside(conn, "p", ["idle", "starting"], {"a", "b", "c", "q"})


def test_a_transition_guarded_by_a_null_column_matches_it(db: Database) -> None:
    """Prepared updates bind `=`, which never matches NULL: a NULL key keeps SQLAlchemy's `IS NULL`."""
    with tx(db) as conn:
        rows.insert_rows(conn, rows.nodes, [node_row("a", state="starting")])
    with tx(db) as conn:
        assert rows.change(conn, rows.nodes, {"id": "a", "start_task": None}, {"scheduling_state": "disabled"})
        assert not rows.change(conn, rows.nodes, {"id": "a", "pool_key": "q"}, {"scheduling_state": "enabled"})
        node = rows.get(conn, rows.nodes, id="a")
        assert node is not None and node["scheduling_state"] == "disabled"
        assert rows.transition(conn, rows.nodes, {"id": "a"}, node, {"state": "idle"})
        assert not rows.transition(conn, rows.nodes, {"id": "a"}, node, {"state": "idle"})  # no longer starting


def test_recent_tasks_of_a_node_latest_first_with_their_jobs_id(db: Database) -> None:
    later = T0 + timedelta(minutes=1)
    with tx(db) as conn:
        rows.insert_rows(conn, rows.jobs, [job_row("j", 1, id="J")])
        rows.insert_rows(
            conn,
            rows.tasks,
            [
                task_row("j", "old", state="completed", node_id="n1"),
                task_row("j", "new", state="running", node_id="n1", state_transition_time=later),
                task_row("j", "elsewhere", state="running", node_id="n2"),
                task_row("j", "queued"),
            ],
        )
    with tx(db) as conn:
        recent = rows.recent_tasks(conn, "n1", 10)
        assert [(r["id"], r["job_id"], r["state"]) for r in recent] == [
            ("new", "J", "running"),
            ("old", "J", "completed"),
        ]
        assert [r["id"] for r in rows.recent_tasks(conn, "n1", 1)] == ["new"]
        assert recent[0]["state_transition_time"] == later and "rank" not in recent[0]  # typed as the table's
        by_node = rows.recent_tasks_by_node(conn, ["n1", "n2", "n3"], 1)
        assert {node: [r["id"] for r in found] for node, found in by_node.items()} == {
            "n1": ["new"],
            "n2": ["elsewhere"],
        }


def test_tasks_in_states(db: Database) -> None:
    with tx(db) as conn:
        rows.insert_rows(
            conn,
            rows.tasks,
            [
                task_row("j1", "r2", state="running", node_id="n2"),
                task_row("j1", "a", state="active"),
                task_row("j1", "p", state="preparing", node_id="n1"),
                task_row("j2", "r1", state="running", node_id="n1"),
                task_row("j1", "c", state="completed", result="success"),
            ],
        )
    on_node = ["preparing", "running"]
    with tx(db) as conn:
        assert [r["key"] for r in rows.tasks_in_states(conn, on_node)] == ["r2", "p", "r1"]  # by seq
        assert [r["key"] for r in rows.tasks_in_states(conn, on_node, job_key="j1")] == ["r2", "p"]
        assert [r["key"] for r in rows.tasks_in_states(conn, on_node, node_id="n1")] == ["p", "r1"]
        assert [r["key"] for r in rows.tasks_in_states(conn, on_node, job_key="j2", node_id="n2")] == []
        assert rows.tasks_in_states(conn, []) == []


def test_delete_job_rows(db: Database) -> None:
    with tx(db) as conn:
        rows.insert_rows(conn, rows.jobs, [job_row("j1"), job_row("j2", seq=2)])
        rows.insert_rows(conn, rows.tasks, [task_row("j1", "t1"), task_row("j1", "t2"), task_row("j2", "t1")])
        rows.insert_rows(
            conn,
            rows.preparations,
            [
                prep_rules.new_record("j1", "p", "n1", 0),
                prep_rules.new_record("j1", "p", "n2", 0),
                prep_rules.new_record("j2", "p", "n1", 0),
            ],
        )
    with tx(db) as conn:
        rows.delete_job_rows(conn, "j1")
    with tx(db) as conn:
        assert [r["key"] for r in rows.find(conn, rows.jobs)] == ["j2"]
        assert [(r["job_key"], r["key"]) for r in rows.find(conn, rows.tasks)] == [("j2", "t1")]
        assert [(r["job_key"], r["node_id"]) for r in rows.find(conn, rows.preparations)] == [("j2", "n1")]
        rows.delete_job_rows(conn, "j1")  # again: nothing left, no error


# ---------------------------------------------------------------------------------------------- types
@pytest.mark.parametrize("offset_hours", [0, 2, -7])
def test_utc_datetime_round_trip(db: Database, offset_hours: int) -> None:
    """Aware in (any zone), aware UTC out, same instant, microseconds kept; naive UTC in the column."""
    local = T1.astimezone(timezone(timedelta(hours=offset_hours)))
    with tx(db) as conn:
        rows.insert_rows(conn, rows.tasks, [task_row("j", "t", start_time=local, end_time=None)])
    with tx(db) as conn:
        got = rows.get(conn, rows.tasks, job_key="j", key="t")
        assert got["start_time"] == T1
        assert got["start_time"].tzinfo is UTC
        assert got["start_time"].utcoffset() == timedelta(0)
        assert got["end_time"] is None
        assert got["creation_time"] == T0 and got["creation_time"].tzinfo is UTC
        raw = conn.exec_driver_sql("SELECT start_time FROM tasks").scalar_one()
        if isinstance(raw, str):  # SQLite keeps text
            raw = datetime.fromisoformat(raw)
        assert raw == T1.replace(tzinfo=None)


def test_utc_datetime_in_where_clauses(db: Database) -> None:
    """Bound parameters go through the same conversion, so comparisons with aware datetimes work."""
    with tx(db) as conn:
        rows.insert_rows(
            conn, rows.tasks, [task_row("j", "early", start_time=T0), task_row("j", "late", start_time=T1)]
        )
    paris = timezone(timedelta(hours=1))
    with tx(db) as conn:
        later = conn.execute(select(rows.tasks.c.key).where(rows.tasks.c.start_time > T0.astimezone(paris)))
        assert [r for (r,) in later] == ["late"]
        assert rows.get(conn, rows.tasks, start_time=T1.astimezone(paris))["key"] == "late"


def test_json_round_trip(db: Database) -> None:
    spec = {
        "commandLine": "cmd /c echo ü",
        "environmentSettings": [{"name": "A", "value": "1"}],
        "constraints": {"maxTaskRetryCount": -1},
        "nested": {"list": [1, 2.5, None, True]},
    }
    failure = task_rules.exit_failure(3)
    with tx(db) as conn:
        rows.insert_rows(conn, rows.tasks, [task_row("j", "t", spec=spec, failure_info=failure)])
    with tx(db) as conn:
        got = rows.get(conn, rows.tasks, job_key="j", key="t")
        assert (got["spec"], got["failure_info"]) == (spec, failure)


# ---------------------------------------------------------------------------------------------- with core
def _move(
    conn: Connection,
    table: Any,
    keys: dict[str, Any],
    row: dict[str, Any],
    changes: dict[str, Any],
) -> dict[str, Any]:
    if table in rows.GUARDS:
        assert rows.transition(conn, table, keys, row, changes, bump_etag="etag" in row)
    else:
        assert rows.change(conn, table, keys, changes, bump_etag="etag" in row)
    stored = rows.get(conn, table, **keys)
    assert stored is not None
    for name, value in changes.items():
        assert stored[name] == value, name
    return stored


def test_lifecycle_changes_are_storable(db: Database) -> None:
    """Changes from core/ write and read back unchanged (state names, times, JSON) on both backends."""
    with tx(db) as conn:
        rows.insert_rows(conn, rows.jobs, [job_row("j")])
        rows.insert_rows(conn, rows.tasks, [task_row("j", "t", max_retries=1)])
        rows.insert_rows(conn, rows.preparations, [prep_rules.new_record("j", "p", "n1", 0)])
    with tx(db) as conn:
        task = rows.get(conn, rows.tasks, job_key="j", key="t")
        key = {"seq": task["seq"]}
        task = _move(
            conn,
            rows.tasks,
            key,
            task,
            task_rules.transition(task, TaskState.PREPARING, T0, pool_id="p", node_id="n1", attempt=1),
        )
        task = _move(conn, rows.tasks, key, task, task_rules.transition(task, TaskState.RUNNING, T0))
        task = _move(conn, rows.tasks, key, task, task_rules.transition(task, TaskState.ACTIVE, T1, retry=True))
        task = _move(
            conn,
            rows.tasks,
            key,
            task,
            task_rules.transition(task, TaskState.RUNNING, T1, pool_id="p", node_id="n1", attempt=2),
        )
        task = _move(
            conn,
            rows.tasks,
            key,
            task,
            task_rules.transition(task, TaskState.COMPLETED, T1, exit_code=1, failure_info=task_rules.exit_failure(1)),
        )
        assert (task["state"], task["previous_state"], task["retry_count"], task["result"]) == (
            "completed",
            "running",
            1,
            "failure",
        )

        record = rows.get(conn, rows.preparations, job_key="j", node_id="n1")
        pkey = {"job_key": "j", "node_id": "n1"}
        record = _move(
            conn,
            rows.preparations,
            pkey,
            record,
            prep_rules.prep(record, StepState.RUNNING, T0, attempt=1),
        )
        record = _move(
            conn,
            rows.preparations,
            pkey,
            record,
            prep_rules.prep(record, StepState.COMPLETED, T0, exit_code=0, failure_info=None),
        )
        assert prep_rules.succeeded(record)

        job = rows.get(conn, rows.jobs, key="j")
        job = _move(
            conn,
            rows.jobs,
            {"key": "j"},
            job,
            job_rules.transition(job, JobState.TERMINATING, T1, reason="UserTerminate"),
        )
        job = _move(conn, rows.jobs, {"key": "j"}, job, job_rules.transition(job, JobState.COMPLETED, T1))
        assert (job["state"], job["end_time"], job["terminate_reason"]) == ("completed", T1, "UserTerminate")


# ---------------------------------------------------------------------------------------------- Database
async def test_write_then_read(db: Database) -> None:
    await db.write(lambda conn: rows.insert_rows(conn, rows.jobs, [job_row("j")]))
    got = await db.read(lambda conn: rows.get(conn, rows.jobs, key="j"))
    assert got is not None and got["key"] == "j"


async def test_write_rolls_back_on_error(db: Database) -> None:
    def fail(conn: Connection) -> None:
        rows.insert_rows(conn, rows.jobs, [job_row("j")])
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await db.write(fail)
    assert await db.read(lambda conn: rows.find(conn, rows.jobs)) == []


async def test_writes_after_a_failed_one_commit_on_the_same_connection(db: Database) -> None:
    """SQLite writes keep one connection between transactions: a failed one leaves it clean for the next."""

    def fail(conn: Connection) -> None:
        rows.insert_rows(conn, rows.jobs, [job_row("lost")])
        raise ValueError("boom")

    await db.write(lambda conn: rows.insert_rows(conn, rows.jobs, [job_row("a")]))
    first = db._loop_connection
    with pytest.raises(ValueError):
        await db.write(fail)
    with pytest.raises(IntegrityError):  # a statement error, raised inside the transaction
        await db.write(lambda conn: rows.insert_rows(conn, rows.jobs, [job_row("a")]))
    await db.write(lambda conn: rows.insert_rows(conn, rows.jobs, [job_row("b")]))
    assert sorted(r["key"] for r in await db.read(lambda conn: rows.find(conn, rows.jobs))) == ["a", "b"]
    if db.engine.dialect.name == "sqlite":
        assert db._loop_connection is first and first is not None
    else:  # PostgreSQL writes run on the store thread, each on a pooled connection
        assert first is None


def test_the_sqlite_file_is_readable_by_the_service_alone(tmp_path) -> None:
    """Task accounts can pass through the data dir; they must not read the store (nor its WAL)."""
    path = tmp_path / "kiln.db"
    path.write_bytes(b"")
    path.chmod(0o644)
    database = Database(sqlite_url(tmp_path))
    try:
        database.migrate()
        files = [p for p in tmp_path.iterdir() if p.name.startswith("kiln.db")]
        assert {p.name for p in files} >= {"kiln.db", "kiln.db-wal"}
        assert {oct(p.stat().st_mode & 0o777) for p in files} == {"0o600"}
    finally:
        database.close()


async def test_the_log_is_checkpointed_off_the_writers_commits(tmp_path) -> None:
    """Commits never checkpoint (their fsyncs would stall the loop that writes); the checkpointer's
    thread folds the log into the database file soon after."""
    database = Database(sqlite_url(tmp_path))
    try:
        database.migrate()
        with database.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
        before = (tmp_path / "kiln.db").stat().st_size
        for n in range(20):  # ~2 MB of log
            await database.write(
                lambda conn, n=n: rows.insert_rows(
                    conn,
                    rows.jobs,
                    [{**job_row(f"j{n}-{i}", seq=n * 25 + i + 1), "spec": {"padding": "x" * 4000}} for i in range(25)],
                )
            )
        wait_for(lambda: (tmp_path / "kiln.db").stat().st_size > before + 1_000_000, 10, "the checkpoint")
    finally:
        database.close()


def test_a_schedule_job_id_longer_than_64_fits(db: Database) -> None:
    """`<scheduleId>:job-<n>` with a 64-character schedule id: the job, its tasks and prep records store it."""
    job_id = "s" * 64 + ":job-1234567890"
    with tx(db) as conn:
        rows.insert_rows(conn, rows.jobs, [job_row(job_id)])
        rows.insert_rows(conn, rows.tasks, [task_row(job_id, "t")])
        rows.insert_rows(conn, rows.preparations, [prep_rules.new_record(job_id, "p", "n1", 0)])
    with tx(db) as conn:
        assert rows.get(conn, rows.jobs, key=job_id)["id"] == job_id
        assert rows.get(conn, rows.tasks, job_key=job_id, key="t") is not None
        assert rows.get(conn, rows.preparations, job_key=job_id, node_id="n1") is not None


def test_job_schedule_row_round_trip(db: Database) -> None:
    moment = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
    row = {
        "key": "s",
        "id": "S",
        "seq": 1,
        "spec": {"schedule": {}, "jobSpecification": {"poolInfo": {"poolId": "p"}}},
        "state": "active",
        "state_transition_time": moment,
        "creation_time": moment,
        "last_modified": moment,
        "etag": rows.new_etag(),
    }
    with tx(db) as conn:
        rows.insert_rows(conn, rows.job_schedules, [row])
    with tx(db) as conn:
        got = rows.get(conn, rows.job_schedules, key="s")
        assert (got["id"], got["job_count"], got["last_due"], got["pool_id"]) == ("S", 0, None, None)
        assert got["spec"] == row["spec"] and got["creation_time"] == moment


def test_utc_times_are_stored_in_sqlalchemys_sqlite_format() -> None:
    """UTCDateTime's own SQLite processors must write what SQLAlchemy's DateTime wrote (older stores) and
    read it back, zero microseconds and other offsets included."""
    from sqlalchemy import Column, DateTime, Integer, MetaData, Table, create_engine, insert, select, text

    from kiln.store.schema import UTCDateTime

    table = Table(
        "times",
        MetaData(),
        Column("n", Integer, primary_key=True),
        Column("ours", UTCDateTime),
        Column("theirs", DateTime),
    )
    engine = create_engine("sqlite://")
    table.metadata.create_all(engine)
    values = [
        datetime(2026, 11, 26, 7, 13, 5, 123456, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2))),
        datetime(2026, 1, 2, 3, 4, 5, 1, tzinfo=UTC),
    ]
    with engine.begin() as conn:
        for n, value in enumerate(values):
            conn.execute(insert(table).values(n=n, ours=value, theirs=value.astimezone(UTC).replace(tzinfo=None)))
        stored = conn.execute(text("SELECT ours, theirs FROM times ORDER BY n")).all()
        assert [ours for ours, _ in stored] == [theirs for _, theirs in stored]
        assert stored[1][0] == "2026-01-02 01:04:05.000000"
        assert conn.execute(select(table.c.ours).order_by(table.c.n)).scalars().all() == values
        assert conn.execute(select(table.c.n).where(table.c.ours > values[1])).scalars().all() == [0, 2]


def test_prepared_statements_read_and_write_what_sqlalchemy_does(db: Database) -> None:
    """The hot path's statements run on the driver's cursor: rows must come back exactly as SQLAlchemy's own
    select returns them (times aware UTC, JSON decoded, NULLs as None), and updates land the same."""
    failed = {"category": "usererror", "code": "FailureExitCode", "message": "exit 3"}
    with tx(db) as conn:
        rows.insert_rows(
            conn,
            rows.tasks,
            [task_row("j", "a"), task_row("j", "b", state="completed", end_time=T0, failure_info=failed)],
        )
        seqs = rows.task_seqs(conn, "j", ["a", "b", "missing"])
        assert set(seqs) == {"a", "b"}
        mine = sorted(rows.tasks_by_seq(conn, list(seqs.values())), key=lambda r: r["key"])
        theirs = [dict(r) for r in conn.execute(select(rows.tasks).order_by(rows.tasks.c.key)).mappings()]
        assert mine == theirs
        assert mine[1]["failure_info"] == failed and mine[1]["end_time"] == T0 and mine[0]["failure_info"] is None
        assert rows.get(conn, rows.tasks, job_key="j", key="b") == theirs[1]
        assert rows.get(conn, rows.tasks, job_key="j", key="missing") is None
    effects = Effects()
    effects.change_task(mine[0], {"state": "running", "start_time": T0, "failure_info": failed})
    with tx(db) as conn:
        effects.write_batched(conn)
        (narrow,) = rows.tasks_by_seq(conn, [seqs["a"]], ("seq", "state", "start_time", "failure_info"))
    assert narrow == {"seq": seqs["a"], "state": "running", "start_time": T0, "failure_info": failed}
