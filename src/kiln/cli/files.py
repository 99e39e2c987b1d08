"""`kiln file …`: a task's files (stdout.txt, stderr.txt, wd/…), through the SDK; `tail -f` follows one
while its task runs."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer
from azure.core.exceptions import HttpResponseError

from kiln.cli.session import Session, command

app = typer.Typer(help="Task files: list, get, tail, delete.", no_args_is_help=True)

COLUMNS = [
    ("name", "name"),
    ("directory", "isDirectory"),
    ("bytes", "properties.contentLength"),
    ("modified", "properties.lastModified"),
]
JOB = typer.Argument(..., help="Job id.")
TASK = typer.Argument(..., help="Task id.")
PATH = typer.Argument(..., help="The file's path in the task's directory (stdout.txt, wd/out.csv, …).")
#: Batch's answer to a range that starts at or past a file's end: nothing new yet
RANGE_NOT_SATISFIABLE = 416


@command(app, "list")
def list_files(
    session: Session,
    job: str = JOB,
    task: str = TASK,
    recursive: bool = typer.Option(True, help="Include the files under wd/."),
) -> None:
    """A task's files."""
    files = session.client.list_task_files(job, task, recursive=recursive)
    session.print_list(files, COLUMNS, f"Files of task {task} in job {job}")


@command(app)
def get(
    session: Session,
    job: str = JOB,
    task: str = TASK,
    path: str = PATH,
    output: Path = typer.Option(None, "--output", "-o", help="Write it here instead of to stdout."),
) -> None:
    """A task's file, to stdout or --output."""
    chunks = session.client.download_task_file(job, task, path)
    if output is None:
        for chunk in chunks:
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
        return
    with output.open("wb") as out:
        for chunk in chunks:
            out.write(chunk)


@command(app)
def tail(
    session: Session,
    job: str = JOB,
    task: str = TASK,
    path: str = PATH,
    lines: int = typer.Option(10, "--lines", "-n", help="How many of its last lines to print first."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing what is written until the task ends."),
    interval: float = typer.Option(0.5, help="Seconds between polls with --follow."),
) -> None:
    """A task file's last lines; with -f, what is appended to it until its task completes."""
    data = b"".join(session.client.download_task_file(job, task, path))
    _write(b"".join(data.splitlines(keepends=True)[-lines:]) if lines > 0 else b"")
    offset = len(data)
    while follow:
        done = session.client.get_task(job, task).state == "completed"  # then one last read
        more = _read_from(session, job, task, path, offset)
        _write(more)
        offset += len(more)
        if done:
            break
        time.sleep(interval)


def _read_from(session: Session, job: str, task: str, path: str, offset: int) -> bytes:
    try:
        return b"".join(session.client.download_task_file(job, task, path, ocp_range=f"bytes={offset}-"))
    except HttpResponseError as error:
        if error.status_code == RANGE_NOT_SATISFIABLE:
            return b""
        raise


def _write(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


@command(app)
def delete(session: Session, job: str = JOB, task: str = TASK, path: str = PATH) -> None:
    """Delete a task's file."""
    session.client.delete_task_file(job, task, path)
    session.done(f"{path} deleted", path=path)
