"""Kept directories (store.kept_dirs) on SQLite and PostgreSQL: due order, guarded sweeps, what goes with a task
or job, the index the sweep reads through, and the migration that fills them from the stored history."""

from __future__ import annotations

from datetime import timedelta

from alembic import command
from sqlalchemy import insert, select
from tests.unit.store.test_live import _plan, _statements
from tests.unit.store.test_store import T0, job_row, task_row, tx

from kiln.store import kept_dirs, rows
from kiln.store.database import Database, alembic_config
from kiln.store.kept_dirs import Kept
from kiln.store.schema import kept_dirs as table
from kiln.wire.times import UNLIMITED

H = timedelta(hours=1)


def stored(conn) -> list[Kept]:
    return sorted(
        Kept(*row) for row in conn.execute(select(table.c.node_id, table.c.path, table.c.job_key, table.c.due))
    )


def test_due_directories_come_earliest_first_and_a_directory_kept_again_takes_its_new_time(db: Database) -> None:
    with tx(db) as conn:
        kept_dirs.keep(conn, [Kept("n1", "w/j/a", "j", T0 + 3 * H), Kept("n2", "w/j/a", "j", T0 + H)])
        kept_dirs.keep(conn, [Kept("n1", "w/j/b", "j", T0 + 2 * H), Kept("n1", "w/j/a", "j", T0 + 4 * H)])
        assert kept_dirs.next_due(conn) == T0 + H
        assert [k.path for k in kept_dirs.due(conn, T0 + 3 * H, 10)] == ["w/j/a", "w/j/b"]  # n2's, then b
        assert [k.node_id for k in kept_dirs.due(conn, T0 + 3 * H, 1)] == ["n2"]
        assert kept_dirs.due(conn, T0, 10) == []
        assert len(stored(conn)) == 3


def test_a_sweep_leaves_a_row_that_was_kept_again_since_it_read_it(db: Database) -> None:
    with tx(db) as conn:
        kept_dirs.keep(conn, [Kept("n1", "w/j/a", "j", T0), Kept("n1", "w/j/b", "j", T0)])
        read = kept_dirs.due(conn, T0, 10)
        kept_dirs.keep(conn, [Kept("n1", "w/j/b", "j", T0 + H)])  # the task ran and ended again meanwhile
        kept_dirs.swept(conn, read)
        assert stored(conn) == [Kept("n1", "w/j/b", "j", T0 + H)]
        assert kept_dirs.next_due(conn) == T0 + H


def test_a_postponed_row_comes_due_again_later_unless_it_was_kept_again_since(db: Database) -> None:
    with tx(db) as conn:
        kept_dirs.keep(conn, [Kept("n1", "w/j/a", "j", T0), Kept("n1", "w/j/b", "j", T0)])
        read = kept_dirs.due(conn, T0, 10)
        kept_dirs.keep(conn, [Kept("n1", "w/j/b", "j", T0 + 2 * H)])  # ended again meanwhile: its own time
        kept_dirs.postpone(conn, read, T0 + H)  # its node was not up: try again in an hour
        assert kept_dirs.due(conn, T0, 10) == []
        assert stored(conn) == [Kept("n1", "w/j/a", "j", T0 + H), Kept("n1", "w/j/b", "j", T0 + 2 * H)]


def test_release_forget_and_move_touch_only_their_rows(db: Database) -> None:
    with tx(db) as conn:
        kept_dirs.keep(
            conn,
            [
                Kept("n1", "w/j/a", "j", T0),
                Kept("n2", "w/j/a", "j", T0),  # a multi-instance task's subtask node
                Kept("n1", "w/j/b", "j", T0),
                Kept("n1", "w/k/a", "k", T0),
            ],
        )
        kept_dirs.move(conn, "j", "w/j/a", T0 + H)
        assert [k.due for k in stored(conn) if k.path == "w/j/a"] == [T0 + H, T0 + H]
        kept_dirs.release(conn, "n1", "w/j/a")  # reactivated: its node's directory is used again
        assert [(k.node_id, k.path) for k in stored(conn)] == [("n1", "w/j/b"), ("n1", "w/k/a"), ("n2", "w/j/a")]
        kept_dirs.forget(conn, "j", "w/j/b")  # the task was deleted
        assert [(k.node_id, k.path) for k in stored(conn)] == [("n1", "w/k/a"), ("n2", "w/j/a")]
        kept_dirs.forget(conn, "j")
        assert [(k.node_id, k.path) for k in stored(conn)] == [("n1", "w/k/a")]


def test_a_deleted_job_takes_its_kept_directories_with_it(db: Database) -> None:
    with tx(db) as conn:
        rows.insert_rows(conn, rows.jobs, [job_row("j"), job_row("k", seq=2)])
        kept_dirs.keep(conn, [Kept("n1", "w/j/a", "j", T0), Kept("n1", "w/k/a", "k", T0)])
        rows.delete_job_rows(conn, "j")
        assert [k.job_key for k in stored(conn)] == ["k"]


def test_the_sweep_reads_through_the_due_index(db: Database) -> None:
    with tx(db) as conn:
        kept_dirs.keep(conn, [Kept(f"n{i % 7}", f"w/j/t{i}", "j", T0 + i * H) for i in range(200)])
        with _statements(conn) as executed:
            kept_dirs.due(conn, T0 + 5 * H, 10)
            kept_dirs.next_due(conn)
        for statement, parameters in executed:
            plan = _plan(conn, statement, parameters)
            if conn.dialect.name == "sqlite":
                assert any("ix_kept_dirs_due" in line for line in plan), plan
                assert not any("TEMP B-TREE" in line for line in plan), plan
            else:
                assert not any("Seq Scan" in line or "Sort" in line for line in plan), plan


def test_the_migration_keeps_what_the_stored_history_left_on_nodes(db: Database) -> None:
    with tx(db) as conn:
        command.downgrade(alembic_config(conn), "0017_live_indexes")
    prep = {"id": "prep", "commandLine": "x", "constraints": {"retentionTime": "PT2H"}}
    release = {"id": "rel", "commandLine": "x", "retentionTime": "PT3H"}
    job = job_row("j", spec={"poolInfo": {"poolId": "p"}, "jobPreparationTask": prep, "jobReleaseTask": release})

    def task(key: str, state: str, node: str | None, retention: str | None) -> dict:
        constraints = {"retentionTime": retention} if retention else {}
        spec = {"commandLine": "x", "constraints": constraints}
        return task_row("j", key, state=state, node_id=node, end_time=T0, spec=spec)

    with tx(db) as conn:  # as the previous version wrote them: no kept rows
        conn.execute(insert(rows.jobs), [job])
        conn.execute(
            insert(rows.tasks),
            [
                task("done", "completed", "n1", "PT1H"),
                task("multi", "completed", "n1", "PT1H"),
                task("forever", "completed", "n1", UNLIMITED),
                task("never-ran", "completed", None, "PT1H"),
                task("running", "running", "n2", "PT1H"),
            ],
        )
        multi = conn.execute(select(rows.tasks.c.seq).where(rows.tasks.c.key == "multi")).scalar_one()
        conn.execute(
            insert(rows.subtasks),
            [
                {"task_seq": multi, "id": i, "job_key": "j", "attempt": 1, "pool_id": "p", "node_id": node}
                | {"state": "completed", "state_transition_time": T0}
                for i, node in ((0, "n1"), (1, "n3"))
            ],
        )
        record = {"job_key": "j", "pool_id": "p", "incarnation": 0, "prep_attempt": 1, "prep_retry_count": 0}
        record |= {"release_attempt": 1, "prep_end_time": T0, "release_end_time": T0}
        conn.execute(
            insert(rows.preparations),
            [
                record | {"node_id": "n1", "prep_state": "completed", "release_state": "completed"},
                record | {"node_id": "n2", "prep_state": "completed", "release_state": "pending"},
            ],
        )
    db.migrate()
    with tx(db) as conn:
        assert stored(conn) == sorted(
            [
                Kept("n1", "workitems/j/job-1/done", "j", T0 + H),
                Kept("n1", "workitems/j/job-1/multi", "j", T0 + H),
                Kept("n3", "workitems/j/job-1/multi", "j", T0 + H),
                Kept("n1", "workitems/j/job-1/prep", "j", T0 + 2 * H),
                Kept("n2", "workitems/j/job-1/prep", "j", T0 + 2 * H),
                Kept("n1", "workitems/j/job-1/rel", "j", T0 + 3 * H),
            ]
        )
