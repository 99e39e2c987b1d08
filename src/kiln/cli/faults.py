"""`kiln fault …`: faults on demand through Kiln's own routes (/kiln/…/faults/…), to see how a Batch
application copes. Each is noted in the story of the tasks it hits (`kiln task story`)."""

from __future__ import annotations

from urllib.parse import quote

import typer

from kiln.cli import nodes
from kiln.cli.session import Session, command

app = typer.Typer(
    help="Faults on demand: lose a node, preempt a spot node, fail a node's next preparation or start task, fail the "
    "next resource-file download, slow dispatch, kill a task."
)
POOL = typer.Argument(..., help="Pool id.")
NODE = typer.Argument(..., help="Node id.")


def _node(pool: str, node: str) -> str:
    return f"/kiln/pools/{quote(pool, safe='')}/nodes/{quote(node, safe='')}/faults"


@command(app)
def lose_node(session: Session, pool: str = POOL, node: str = NODE) -> None:
    """The node's worker dies (as a crashed VM): its tasks are requeued, and it comes back."""
    body = session.kiln("POST", f"{_node(pool, node)}/lose")
    session.done(f"node {node} lost with {body['tasksOnNode']} task(s) on it", **body)


#: `kiln fault preempt POOL NODE`: the spot preemption `kiln node preempt` makes, among the other faults.
command(app, "preempt")(nodes.preempt)

EXIT_CODE = typer.Option(1, "--exit-code", help="The exit code it ends with (1-255).")


@command(app)
def fail_next_prep(session: Session, pool: str = POOL, node: str = NODE, exit_code: int = EXIT_CODE) -> None:
    """The next job preparation task the node runs exits with --exit-code instead of running."""
    _exits(session, pool, node, exit_code, "fail-next-preparation", "preparation task")


@command(app)
def fail_next_start_task(session: Session, pool: str = POOL, node: str = NODE, exit_code: int = EXIT_CODE) -> None:
    """The next start task the node runs (at its next reboot, reimage or return) exits with --exit-code."""
    _exits(session, pool, node, exit_code, "fail-next-start-task", "start task")


def _exits(session: Session, pool: str, node: str, exit_code: int, route: str, what: str) -> None:
    body = session.kiln("POST", f"{_node(pool, node)}/{route}", {"exitCode": exit_code})
    session.done(f"the next {what} on node {node} will exit with {exit_code}", **body)


@command(app)
def fail_next_download(
    session: Session,
    pool: str = typer.Option(None, "--pool", help="With --node: the node's next step with resource files."),
    node: str = typer.Option(None, "--node", help="Node id (with --pool)."),
    job: str = typer.Option(None, "--job", help="The job's next step with resource files (task, prep, release)."),
    status: int = typer.Option(404, "--status", help="The HTTP status the blob store answers with (400-599)."),
) -> None:
    """The next step with resource files fails its download as the blob store's answer makes it fail on Azure
    (404: BlobNotFound, 401/403: BlobAccessDenied, others: BlobDownloadMiscError)."""
    if job is not None and pool is None and node is None:
        where, path = f"job {job}", f"/kiln/jobs/{quote(job, safe='')}/faults/fail-next-download"
    elif job is None and pool is not None and node is not None:
        where, path = f"node {node}", f"{_node(pool, node)}/fail-next-download"
    else:
        raise typer.BadParameter("give --job, or --pool and --node")
    body = session.kiln("POST", path, {"httpStatus": status})
    session.done(f"the next download on {where} will get HTTP {status}", **body)


@command(app)
def slow_dispatch(
    session: Session,
    pool: str = POOL,
    node: str = NODE,
    delay: int = typer.Option(..., "--delay", help="Seconds each step waits before it is sent to the node."),
    steps: int = typer.Option(None, "--steps", help="How many of the node's next steps wait (default 1)."),
    seconds: int = typer.Option(None, "--for", help="Instead of --steps: every step sent within this many seconds."),
) -> None:
    """Steps sent to the node wait --delay seconds first: its next --steps, or all of them --for a while."""
    body: dict[str, int] = {"delaySeconds": delay}
    if steps is not None:
        body["steps"] = steps
    if seconds is not None:
        body["durationSeconds"] = seconds
    answer = session.kiln("POST", f"{_node(pool, node)}/slow-dispatch", body)
    lasting = f"for {seconds} s" if seconds is not None else f"for the next {answer['steps']} step(s)"
    session.done(f"dispatch to node {node} delayed {delay} s {lasting}", **answer)


@command(app)
def kill_task(
    session: Session,
    job: str = typer.Argument(..., help="Job id."),
    task: str = typer.Argument(..., help="Task id."),
) -> None:
    """SIGKILL a running task's processes (as the OOM killer would): it exits 137 and its retry rules apply."""
    body = session.kiln("POST", f"/kiln/jobs/{quote(job, safe='')}/tasks/{quote(task, safe='')}/faults/kill")
    session.done(f"task {task}: {body['killedProcesses']} process(es) killed", **body)
