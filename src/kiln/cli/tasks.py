"""`kiln task …`: tasks through the SDK, and `kiln task story` (Kiln's own route: what happened to a task
and why it is where it is)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import typer
from azure.batch import models
from rich.table import Table

from kiln.cli.session import JSON_FILE, Session, command, console, print_json, read_json_file, usage

app = typer.Typer(help="Tasks: list, show, create, terminate, reactivate, delete, story.", no_args_is_help=True)

COLUMNS = [
    ("id", "id"),
    ("state", "state"),
    ("exit code", "executionInfo.exitCode"),
    ("result", "executionInfo.result"),
    ("failure", "executionInfo.failureInfo.code"),
    ("node", "nodeInfo.nodeId"),
    ("retries", "executionInfo.retryCount"),
    ("requeues", "executionInfo.requeueCount"),
]
JOB = typer.Argument(..., help="Job id.")
TASK = typer.Argument(..., help="Task id.")


@command(app, "list")
def list_tasks(
    session: Session,
    job: str = JOB,
    state: str = typer.Option(None, help="Only tasks in this state (active, preparing, running, completed)."),
    filter: str = typer.Option(None, help="OData $filter (e.g. \"executionInfo/result eq 'failure'\")."),
) -> None:
    """A job's tasks."""
    if state is not None:
        filter = f"state eq '{state}'" + (f" and ({filter})" if filter else "")
    session.print_list(session.client.list_tasks(job, filter=filter), COLUMNS, f"Tasks of job {job}")


@command(app)
def show(session: Session, job: str = JOB, task: str = TASK) -> None:
    """One task, every field."""
    session.print_one(session.client.get_task(job, task), f"Task {task} of job {job}")


@command(app)
def create(
    session: Session,
    job: str = JOB,
    json_file: Path = JSON_FILE,
    id: str = typer.Option(None, "--id", help="Task id (without --json-file)."),
    command_line: str = typer.Option(None, "--command", help="The command line (run without a shell, as Batch does)."),
    admin: bool = typer.Option(False, help="Run as the pool's admin auto-user."),
) -> None:
    """Add a task, or from a --json-file holding a list, a task collection."""
    if json_file is not None:
        body = read_json_file(json_file)
        tasks = [models.BatchTaskCreateOptions(doc) for doc in (body if isinstance(body, list) else [body])]
    elif id is not None and command_line is not None:
        identity = models.UserIdentity(
            auto_user=models.AutoUserSpecification(scope="pool", elevation_level="admin") if admin else None
        )
        tasks = [models.BatchTaskCreateOptions(id=id, command_line=command_line, user_identity=identity)]
    else:
        raise usage("kiln task create needs --json-file, or --id and --command")
    if len(tasks) == 1:
        session.client.create_task(job, tasks[0])
    else:
        session.client.create_tasks(job, tasks)
    ids = [t.id for t in tasks]
    session.done(f"{len(ids)} task(s) added to job {job}", ids=ids)


@command(app)
def terminate(session: Session, job: str = JOB, task: str = TASK) -> None:
    """Kill a task that runs; it completes with failure."""
    session.client.terminate_task(job, task)
    session.done(f"task {task} terminated", id=task)


@command(app)
def reactivate(session: Session, job: str = JOB, task: str = TASK) -> None:
    """Run a failed task again."""
    session.client.reactivate_task(job, task)
    session.done(f"task {task} reactivated", id=task)


@command(app)
def delete(session: Session, job: str = JOB, task: str = TASK) -> None:
    """Delete a task (a running one is killed)."""
    session.client.delete_task(job, task)
    session.done(f"task {task} deleted", id=task)


@command(app)
def story(session: Session, job: str = JOB, task: str = TASK) -> None:
    """A task's transitions with what caused each, and why it is where it is."""
    body = session.kiln("GET", f"/kiln/jobs/{quote(job, safe='')}/tasks/{quote(task, safe='')}/story")
    if session.as_json:
        print_json(body)
        return
    console.print(_story_table(body))
    console.print(f"[bold]{body['taskId']}[/bold]: {body['why']}", highlight=False)


def _story_table(body: dict[str, Any]) -> Table:
    table = Table(title=f"Story of task {body['taskId']} in job {body['jobId']}", title_justify="left")
    for column in ("at", "kind", "node", "from", "to", "stimulus", "detail"):
        table.add_column(column, overflow="fold")
    for r in body["transitions"]:
        added = "" if r["kind"] == "fault" else "(added)"  # a fault is a record, not a change of state
        cells = (r["at"], r["kind"], r["nodeId"], r["from"] or added, r["to"], r["stimulus"], r["detail"])
        table.add_row(*(cell or "" for cell in cells))
    return table
