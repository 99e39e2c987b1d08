"""A job's transfer accounting (Kiln-specific): what its steps downloaded and uploaded, added up."""

from __future__ import annotations

from sqlalchemy import Connection

from kiln.commands.control import Control, Row
from kiln.commands.jobs import load
from kiln.core.transfers import JobTransfers, summarize
from kiln.store.transfers import job_transfers, tasks_per_node


async def of_job(control: Control, job_id: str) -> tuple[Row, JobTransfers]:
    def read(conn: Connection) -> tuple[Row, JobTransfers]:
        job = load(conn, job_id)
        return job, summarize(job_transfers(conn, job["key"]), tasks_per_node(conn, job["key"]))

    return await control.database.read(read)
