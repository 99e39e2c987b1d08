"""`kiln job …`: jobs through the SDK, `kiln job watch`, which follows one to its end, and `kiln job transfers`
(Kiln's own route: what a job's steps downloaded and uploaded)."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import quote

import typer
from azure.batch import models
from azure.batch.models._models import BatchJobTerminateOptions
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from kiln.cli import transfers
from kiln.cli.exit_codes import ExitCode
from kiln.cli.session import JSON_FILE, Session, command, console, print_json, read_json_file, usage, wire

app = typer.Typer(help="Jobs: list, show, create, terminate, delete, watch, transfers.", no_args_is_help=True)

COLUMNS = [
    ("id", "id"),
    ("state", "state"),
    ("pool", "poolInfo.poolId"),
    ("priority", "priority"),
    ("created", "creationTime"),
    ("end", "executionInfo.endTime"),
    ("terminate reason", "executionInfo.terminateReason"),
]
PREP_COLUMNS = [
    ("node", "nodeId"),
    ("prep state", "jobPreparationTaskExecutionInfo.state"),
    ("prep exit", "jobPreparationTaskExecutionInfo.exitCode"),
    ("prep failure", "jobPreparationTaskExecutionInfo.failureInfo.code"),
    ("release state", "jobReleaseTaskExecutionInfo.state"),
    ("release exit", "jobReleaseTaskExecutionInfo.exitCode"),
]
JOB = typer.Argument(..., help="Job id.")


@command(app, "list")
def list_jobs(session: Session, filter: str = typer.Option(None, help="OData $filter.")) -> None:
    """The account's jobs."""
    session.print_list(session.client.list_jobs(filter=filter), COLUMNS, "Jobs")


@command(app)
def show(session: Session, job: str = JOB) -> None:
    """One job, every field, with its task counts."""
    doc = wire(session.client.get_job(job))
    doc["taskCounts"] = wire(session.client.get_job_task_counts(job).task_counts)
    session.print_one(doc, f"Job {job}")


@command(app)
def create(
    session: Session,
    json_file: Path = JSON_FILE,
    id: str = typer.Option(None, "--id", help="Job id (without --json-file)."),
    pool: str = typer.Option(None, help="The pool to run on (without --json-file)."),
    prep: str = typer.Option(None, help="A job preparation task's command line."),
    release: str = typer.Option(None, help="A job release task's command line."),
    terminate_when_done: bool = typer.Option(False, help="onAllTasksComplete: terminatejob."),
) -> None:
    """Add a job from --json-file (Batch's body) or from the options."""
    if json_file is not None:
        body = models.BatchJobCreateOptions(read_json_file(json_file))
    elif id is not None and pool is not None:
        body = models.BatchJobCreateOptions(
            id=id,
            pool_info=models.BatchPoolInfo(pool_id=pool),
            job_preparation_task=models.BatchJobPreparationTask(command_line=prep) if prep else None,
            job_release_task=models.BatchJobReleaseTask(command_line=release) if release else None,
            all_tasks_complete_mode="terminatejob" if terminate_when_done else None,
        )
    else:
        raise usage("kiln job create needs --json-file, or --id and --pool")
    session.client.create_job(body)
    session.done(f"job {body.id} added", id=body.id)


@command(app)
def terminate(
    session: Session, job: str = JOB, reason: str = typer.Option("UserTerminate", help="The terminate reason.")
) -> None:
    """End a job: its running tasks are killed and its release tasks run."""
    # always a reason: the SDK cannot send this request with an empty body (it gives it no content type)
    options = BatchJobTerminateOptions(termination_reason=reason)  # not exported from azure.batch.models
    session.run_to_end(session.client.begin_terminate_job, job, options)
    session.done(f"job {job} terminated", id=job)


@command(app)
def disable(
    session: Session,
    job: str = JOB,
    running: str = typer.Option("requeue", help="What happens to running tasks: requeue, terminate or wait."),
) -> None:
    """Stop scheduling a job's tasks."""
    session.run_to_end(session.client.begin_disable_job, job, models.BatchJobDisableOptions(disable_tasks=running))
    session.done(f"job {job} disabled", id=job)


@command(app)
def enable(session: Session, job: str = JOB) -> None:
    """Resume scheduling a disabled job's tasks."""
    session.run_to_end(session.client.begin_enable_job, job)
    session.done(f"job {job} enabled", id=job)


@command(app)
def delete(session: Session, job: str = JOB) -> None:
    """Delete a job and its tasks (after its release tasks)."""
    session.run_to_end(session.client.begin_delete_job, job)
    session.done(f"job {job} deleted", id=job)


@command(app)
def prep_status(session: Session, job: str = JOB) -> None:
    """Each node's job preparation and release task: state and exit code."""
    rows = session.client.list_job_preparation_and_release_task_status(job)
    session.print_list(rows, PREP_COLUMNS, f"Preparation and release tasks of job {job}")


@command(app, "transfers")
def show_transfers(session: Session, job: str = JOB) -> None:
    """What the job's steps downloaded (resource files) and uploaded (output files), per node and in all."""
    body = session.kiln("GET", f"/kiln/jobs/{quote(job, safe='')}/transfers")
    if session.as_json:
        print_json(body)
        return
    console.print(transfers.table(body))


@command(app)
def watch(
    session: Session,
    job: str = JOB,
    interval: float = typer.Option(1.0, help="Seconds between polls."),
    timeout: float = typer.Option(None, help="Give up after this many seconds (exit 8)."),
) -> None:
    """Live progress until the job completes, or until every task it has completed (a job that keeps
    running after its tasks: onAllTasksComplete noaction). Exits 7 if a task failed."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
        console=console,
        disable=session.as_json,
    ) as progress:
        bar = progress.add_task(job, total=None, counts="")
        while True:
            state = wire(session.client.get_job(job))["state"]
            counts = session.client.get_job_task_counts(job).task_counts
            total = counts.active + counts.running + counts.completed
            progress.update(bar, total=total or None, completed=counts.completed, counts=_counts(state, counts))
            if state == "completed" or (total and counts.completed == total):
                break
            if deadline is not None and time.monotonic() > deadline:
                _report(session, job, state, counts)
                raise typer.Exit(ExitCode.TIMED_OUT)
            time.sleep(interval)
    _report(session, job, state, counts)
    if counts.failed:
        raise typer.Exit(ExitCode.TASKS_FAILED)


def _counts(state: str, counts: models.BatchTaskCounts) -> str:
    return (
        f"{state}: {counts.active} active, {counts.running} running, "
        f"{counts.succeeded} succeeded, [red]{counts.failed} failed[/red]"
    )


def _report(session: Session, job: str, state: str, counts: models.BatchTaskCounts) -> None:
    session.done(
        f"job {job} {state}: {counts.completed} of {counts.active + counts.running + counts.completed} tasks "
        f"completed, {counts.succeeded} succeeded, {counts.failed} failed",
        id=job,
        state=state,
        taskCounts=wire(counts),
    )
