"""The transitions table: written with the transaction that made them, bounded per task, gone with the task."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Connection, select
from tests.unit.store.test_store import T0, T1, job_row, node_row, task_row

from kiln import story
from kiln.core import job as job_rules
from kiln.core import node as node_rules
from kiln.core import task as task_rules
from kiln.core.job import JobState
from kiln.core.node import NodeState
from kiln.core.task import TaskState
from kiln.store import rows
from kiln.store.database import Database
from kiln.store.schema import transitions
from kiln.store.stories import STORY_LENGTH, task_story


def _add(db: Database) -> dict[str, Any]:
    with db.engine.begin() as conn:
        rows.insert_rows(conn, rows.jobs, [job_row("j")])
        rows.insert_rows(conn, rows.tasks, [task_row("j", "t")])
        return rows.find(conn, rows.tasks)[0]


def _move(task: dict[str, Any], to: TaskState, **event: Any):
    def work(conn: Connection) -> None:
        changes = task_rules.transition(task, to, T1, **event)
        assert rows.transition(conn, rows.tasks, {"seq": task["seq"]}, task, changes)
        task.update(changes)

    return work


def _story(db: Database, task: dict[str, Any]) -> list[dict[str, Any]]:
    with db.engine.begin() as conn:
        return task_story(conn, "j", task["seq"])


async def test_a_transition_is_recorded_with_its_stimulus_and_detail(db: Database) -> None:
    task = _add(db)
    with story.caused_by("node n1 report"):
        await db.write(_move(task, TaskState.RUNNING, pool_id="p", node_id="n1", attempt=1))
        await db.write(_move(task, TaskState.ACTIVE, retry=True, exit_code=3))
    task_rules.transition(task, TaskState.RUNNING, T0, pool_id="p", node_id="n1", attempt=2)  # no transaction
    found = [
        (r["kind"], r["from_state"], r["to_state"], r["stimulus"], r["detail"], r["node_id"]) for r in _story(db, task)
    ]
    assert found == [
        ("task", "active", "running", "node n1 report", None, "n1"),
        ("task", "running", "active", "node n1 report", "exit code 3, retry 1", "n1"),
    ]
    assert _story(db, task)[0]["at"] == T1


async def test_a_failed_transaction_leaves_no_record(db: Database) -> None:
    task = _add(db)

    def fail(conn: Connection) -> None:
        _move(dict(task), TaskState.RUNNING, pool_id="p", node_id="n1", attempt=1)(conn)
        raise RuntimeError("the commit fails")

    with pytest.raises(RuntimeError):
        await db.write(fail)
    assert _story(db, task) == []


async def test_a_task_keeps_its_latest_transitions(db: Database) -> None:
    """A task that loops through retries is cut back to STORY_LENGTH each time it comes back to active."""
    task = _add(db)
    for attempt in range(1, STORY_LENGTH):
        await db.write(_move(task, TaskState.RUNNING, pool_id="p", node_id="n1", attempt=attempt))
        await db.write(_move(task, TaskState.ACTIVE, retry=True, exit_code=attempt))
    found = _story(db, task)
    assert len(found) == STORY_LENGTH
    assert found[-1]["detail"] == f"exit code {STORY_LENGTH - 1}, retry {STORY_LENGTH - 1}"
    await db.write(_move(task, TaskState.RUNNING, pool_id="p", node_id="n1", attempt=STORY_LENGTH))
    assert len(_story(db, task)) == STORY_LENGTH + 1  # the bound is kept when the task comes round


async def test_deleting_a_task_or_its_job_deletes_its_records(db: Database) -> None:
    task = _add(db)
    await db.write(_move(task, TaskState.RUNNING, pool_id="p", node_id="n1", attempt=1))
    with db.engine.begin() as conn:
        rows.delete_task(conn, task["seq"])
    assert _story(db, task) == []
    task = _add_second(db)
    await db.write(_move(task, TaskState.RUNNING, pool_id="p", node_id="n1", attempt=1))

    def disable(conn: Connection) -> None:
        job = rows.get(conn, rows.jobs, key="j")
        assert rows.transition(conn, rows.jobs, {"key": "j"}, job, job_rules.transition(job, JobState.DISABLING, T1))

    await db.write(disable)
    assert [r["kind"] for r in _story(db, task)] == ["task", "job"]
    with db.engine.begin() as conn:
        rows.delete_job_rows(conn, "j")
        assert conn.execute(select(transitions)).first() is None


def _add_second(db: Database) -> dict[str, Any]:
    with db.engine.begin() as conn:
        rows.insert_rows(conn, rows.tasks, [task_row("j", "u")])
        return rows.get(conn, rows.tasks, job_key="j", key="u")


async def test_removing_a_node_removes_its_own_records(db: Database) -> None:

    with db.engine.begin() as conn:
        rows.insert_rows(conn, rows.nodes, [node_row("n1", state="starting"), node_row("n2", state="starting")])
        found = {n["id"]: n for n in rows.find(conn, rows.nodes)}

    def up(conn: Connection) -> None:
        for node in found.values():
            assert rows.transition(
                conn, rows.nodes, {"id": node["id"]}, node, node_rules.transition(node, NodeState.IDLE, T1)
            )

    await db.write(up)
    with db.engine.begin() as conn:
        rows.remove_node(conn, "n1")
        left = [(r["kind"], r["node_id"]) for r in conn.execute(select(transitions)).mappings()]
    assert left == [("node", "n2")]


async def test_what_a_transaction_deletes_leaves_no_record_of_that_transaction(db: Database) -> None:
    """A node that leaves its pool is moved to leavingpool and deleted in one transaction; a job deleted with its
    tasks ended the same way: notes made before or after the delete do not outlive the rows."""
    with db.engine.begin() as conn:
        rows.insert_rows(conn, rows.nodes, [node_row("n1", state="idle")])
        node = rows.find(conn, rows.nodes)[0]
    task = _add(db)

    def remove(conn: Connection) -> None:
        rows.remove_node(conn, "n1")
        node_rules.transition(node, NodeState.LEAVING_POOL, T1)
        _move(task, TaskState.RUNNING, pool_id="p", node_id="n1", attempt=1)(conn)
        rows.delete_job_rows(conn, "j")

    await db.write(remove)
    with db.engine.begin() as conn:
        assert conn.execute(select(transitions)).first() is None
