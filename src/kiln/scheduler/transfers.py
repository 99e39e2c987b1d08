"""Transfer accounting on the scheduler's side: what the ended steps of a results transaction moved is written in
that transaction, so a result applied again after a failed commit is counted once."""

from __future__ import annotations

from collections.abc import Container, Iterable
from datetime import datetime

from sqlalchemy import Connection

from kiln.compute.protocol import StepResult
from kiln.scheduler.state import StepRef
from kiln.store.transfers import Row, record_transfers


def record(conn: Connection, ended: Iterable[tuple[StepResult, StepRef]], jobs: Container[str], now: datetime) -> None:
    """Steps of jobs Kiln still has (a start task belongs to none); bytes moved count whether or not the
    result itself still matters (a stale attempt moved them all the same)."""
    rows: list[Row] = [
        {
            "job_key": ref.job_key,
            "node_id": ref.node_id,
            "kind": ref.kind,
            "task_seq": ref.seq,
            "attempt": ref.attempt,
            "at": now,
            **moved,
        }
        for result, ref in ended
        if result.transfers and ref.job_key in jobs
        for moved in result.transfers
    ]
    record_transfers(conn, rows)
