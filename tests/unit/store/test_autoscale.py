"""store.autoscale: the task counts an autoscale pool samples, on SQLite and PostgreSQL."""

from __future__ import annotations

from tests.unit.store.test_store import job_row, pool_row, task_row, tx

from kiln.store import rows
from kiln.store.autoscale import pool_task_counts
from kiln.store.database import Database


def test_task_counts_of_a_pools_unfinished_jobs_weigh_multi_instance_tasks_by_their_instances(db: Database) -> None:
    multi = {"commandLine": "mpi", "multiInstanceSettings": {"numberOfInstances": 3}}
    with tx(db) as conn:
        rows.insert_rows(conn, rows.pools, [pool_row("p"), pool_row("other")])
        rows.insert_rows(
            conn,
            rows.jobs,
            [job_row("j"), job_row("done", seq=2, state="completed"), job_row("elsewhere", seq=3, pool_key="other")],
        )
        rows.insert_rows(
            conn,
            rows.tasks,
            [
                task_row("j", "a"),
                task_row("j", "m", spec=multi),
                task_row("j", "r", state="running"),
                task_row("j", "p", state="preparing"),
                task_row("j", "ok", state="completed", result="success"),
                task_row("j", "bad", state="completed", result="failure"),
                task_row("done", "old"),
                task_row("elsewhere", "x"),
            ],
        )
    with tx(db) as conn:
        assert pool_task_counts(conn, "p") == {
            "active": 4,
            "running": 2,
            "completed:success": 1,
            "completed:failure": 1,
        }
        assert pool_task_counts(conn, "nothing") == {}
