"""The transfers table: rows written with a result, read per job with their tasks' ids, gone with the job."""

from __future__ import annotations

from typing import Any

from tests.unit.store.test_store import T1, job_row, task_row

from kiln.store import rows
from kiln.store.database import Database
from kiln.store.transfers import job_transfers, record_transfers, tasks_per_node


def moved(job_key: str, kind: str, task_seq: int | None, size: int) -> dict[str, Any]:
    return {
        "job_key": job_key,
        "node_id": "n1",
        "kind": kind,
        "task_seq": task_seq,
        "attempt": 1,
        "direction": "download",
        "source": "http://storage/c",
        "files": 1,
        "bytes": size,
        "seconds": 0.25,
        "at": T1,
    }


def test_a_jobs_transfers_with_their_task_ids_and_its_tasks_per_node_go_with_the_job(db: Database) -> None:
    with db.engine.begin() as conn:
        rows.insert_rows(conn, rows.jobs, [job_row("j1"), job_row("j2", seq=2)])
        rows.insert_rows(
            conn,
            rows.tasks,
            [task_row("j1", "t1", node_id="n1"), task_row("j1", "t2", node_id="n1"), task_row("j2", "t1")],
        )
        seqs = {(r["job_key"], r["id"]): r["seq"] for r in rows.find(conn, rows.tasks)}
        big = 3 << 30  # past 32 bits: a BigInteger
        record_transfers(
            conn,
            [moved("j1", "prep", None, big), moved("j1", "task", seqs[("j1", "t2")], 5), moved("j2", "prep", None, 7)],
        )
    with db.engine.begin() as conn:
        got = [(r["kind"], r["task_id"], r["bytes"], r["at"]) for r in job_transfers(conn, "j1")]
        assert got == [("prep", None, big, T1), ("task", "t2", 5, T1)]
        assert tasks_per_node(conn, "j1") == {"n1": 2} and tasks_per_node(conn, "j2") == {}
        rows.delete_job_rows(conn, "j1")
    with db.engine.begin() as conn:
        assert job_transfers(conn, "j1") == [] and len(job_transfers(conn, "j2")) == 1
