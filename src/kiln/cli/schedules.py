"""`kiln schedule …`: job schedules, through the SDK."""

from __future__ import annotations

from pathlib import Path

import typer
from azure.batch import models

from kiln.cli.session import Session, command, read_json_file

app = typer.Typer(help="Job schedules: list, show, create, enable, disable, terminate, delete.", no_args_is_help=True)

COLUMNS = [
    ("id", "id"),
    ("state", "state"),
    ("every", "schedule.recurrenceInterval"),
    ("next run", "executionInfo.nextRunTime"),
    ("recent job", "executionInfo.recentJob.id"),
    ("pool", "jobSpecification.poolInfo.poolId"),
]
SCHEDULE = typer.Argument(..., help="Job schedule id.")


@command(app, "list")
def list_schedules(session: Session, filter: str = typer.Option(None, help="OData $filter.")) -> None:
    """The account's job schedules."""
    session.print_list(session.client.list_job_schedules(filter=filter), COLUMNS, "Job schedules")


@command(app)
def show(session: Session, schedule: str = SCHEDULE) -> None:
    """One job schedule, every field."""
    session.print_one(session.client.get_job_schedule(schedule), f"Job schedule {schedule}")


@command(app)
def create(
    session: Session, json_file: Path = typer.Option(..., "--json-file", help="Batch's body (as az takes it).")
) -> None:
    """Add a job schedule from --json-file (Batch's body, as az takes it)."""
    body = models.BatchJobScheduleCreateOptions(read_json_file(json_file))
    session.client.create_job_schedule(body)
    session.done(f"job schedule {body.id} added", id=body.id)


@command(app)
def enable(session: Session, schedule: str = SCHEDULE) -> None:
    """Let a disabled schedule make jobs again."""
    session.client.enable_job_schedule(schedule)
    session.done(f"job schedule {schedule} enabled", id=schedule)


@command(app)
def disable(session: Session, schedule: str = SCHEDULE) -> None:
    """Stop a schedule making jobs (until enabled)."""
    session.client.disable_job_schedule(schedule)
    session.done(f"job schedule {schedule} disabled", id=schedule)


@command(app)
def terminate(session: Session, schedule: str = SCHEDULE) -> None:
    """End a schedule and its active job."""
    session.run_to_end(session.client.begin_terminate_job_schedule, schedule)
    session.done(f"job schedule {schedule} terminated", id=schedule)


@command(app)
def delete(session: Session, schedule: str = SCHEDULE) -> None:
    """Delete a schedule and its jobs."""
    session.run_to_end(session.client.begin_delete_job_schedule, schedule)
    session.done(f"job schedule {schedule} deleted", id=schedule)
