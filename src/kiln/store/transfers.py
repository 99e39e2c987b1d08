"""The transfers table: written with the results that report what their steps moved, read per job."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, insert, select

from kiln.store.schema import tasks, transfers

Row = dict[str, Any]


def record_transfers(conn: Connection, rows: list[Row]) -> None:
    """One statement for the transaction's rows (each with every column but id)."""
    if rows:
        conn.execute(insert(transfers), rows)


def job_transfers(conn: Connection, job_key: str) -> list[Row]:
    """The job's rows, each with its task's id (None for the preparation and release tasks, and a deleted task)."""
    query = (
        select(transfers, tasks.c.id.label("task_id"))
        .select_from(transfers.outerjoin(tasks, tasks.c.seq == transfers.c.task_seq))
        .where(transfers.c.job_key == job_key)
        .order_by(transfers.c.id)
    )
    return [dict(r) for r in conn.execute(query).mappings()]


def tasks_per_node(conn: Connection, job_key: str) -> dict[str, int]:
    """How many of the job's tasks ran on each node (the node of their latest attempt)."""
    query = (
        select(tasks.c.node_id, func.count())
        .where(tasks.c.job_key == job_key, tasks.c.node_id.is_not(None))
        .group_by(tasks.c.node_id)
    )
    return {node_id: count for node_id, count in conn.execute(query)}
