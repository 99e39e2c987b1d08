"""`kiln fault …`: faults on demand through Kiln's own routes (/kiln/…/faults/…), to see how a Batch
application copes. Each is noted in the story of the tasks it hits (`kiln task story`)."""

from __future__ import annotations

from urllib.parse import quote

import typer

from kiln.cli.session import Session, command

app = typer.Typer(help="Faults on demand: lose a node, fail a node's next preparation task, kill a task.")
POOL = typer.Argument(..., help="Pool id.")
NODE = typer.Argument(..., help="Node id.")


def _node(pool: str, node: str) -> str:
    return f"/kiln/pools/{quote(pool, safe='')}/nodes/{quote(node, safe='')}/faults"


@command(app)
def lose_node(session: Session, pool: str = POOL, node: str = NODE) -> None:
    """The node's worker dies (as a crashed VM): its tasks are requeued, and it comes back."""
    body = session.kiln("POST", f"{_node(pool, node)}/lose")
    session.done(f"node {node} lost with {body['tasksOnNode']} task(s) on it", **body)


@command(app)
def fail_next_prep(
    session: Session,
    pool: str = POOL,
    node: str = NODE,
    exit_code: int = typer.Option(1, "--exit-code", help="The exit code it ends with (1-255)."),
) -> None:
    """The next job preparation task the node runs exits with --exit-code instead of running."""
    body = session.kiln("POST", f"{_node(pool, node)}/fail-next-preparation", {"exitCode": exit_code})
    session.done(f"the next preparation task on node {node} will exit with {exit_code}", **body)


@command(app)
def kill_task(
    session: Session,
    job: str = typer.Argument(..., help="Job id."),
    task: str = typer.Argument(..., help="Task id."),
) -> None:
    """SIGKILL a running task's processes (as the OOM killer would): it exits 137 and its retry rules apply."""
    body = session.kiln("POST", f"/kiln/jobs/{quote(job, safe='')}/tasks/{quote(task, safe='')}/faults/kill")
    session.done(f"task {task}: {body['killedProcesses']} process(es) killed", **body)
