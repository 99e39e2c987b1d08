"""`kiln node …`: a pool's compute nodes, through the SDK."""

from __future__ import annotations

from urllib.parse import quote

import typer

from kiln.cli.session import Session, command

app = typer.Typer(help="Compute nodes: list, show, reboot, reimage, preempt.", no_args_is_help=True)

COLUMNS = [
    ("id", "id"),
    ("state", "state"),
    ("scheduling", "schedulingState"),
    ("running tasks", "runningTasksCount"),
    ("slots in use", "runningTaskSlotsCount"),
    ("tasks run", "totalTasksRun"),
    ("succeeded", "totalTasksSucceeded"),
    ("dedicated", "isDedicated"),
]
POOL = typer.Argument(..., help="Pool id.")
NODE = typer.Argument(..., help="Node id.")


@command(app, "list")
def list_nodes(session: Session, pool: str = POOL, filter: str = typer.Option(None, help="OData $filter.")) -> None:
    """A pool's nodes."""
    session.print_list(session.client.list_nodes(pool, filter=filter), COLUMNS, f"Nodes of pool {pool}")


@command(app)
def show(session: Session, pool: str = POOL, node: str = NODE) -> None:
    """One node, every field (its start task, errors, recent tasks)."""
    session.print_one(session.client.get_node(pool, node), f"Node {node}")


@command(app)
def reboot(session: Session, pool: str = POOL, node: str = NODE) -> None:
    """Restart a node (its running tasks are requeued)."""
    session.run_to_end(session.client.begin_reboot_node, pool, node)
    session.done(f"node {node} rebooted", id=node)


@command(app)
def reimage(session: Session, pool: str = POOL, node: str = NODE) -> None:
    """Reinstall a node's disk (its files go; its running tasks are requeued)."""
    session.run_to_end(session.client.begin_reimage_node, pool, node)
    session.done(f"node {node} reimaged", id=node)


@command(app)
def preempt(session: Session, pool: str = POOL, node: str = NODE) -> None:
    """Preempt a low-priority (spot) node now (Kiln's own): its tasks are requeued and it comes back fresh."""
    body = session.kiln("POST", f"/kiln/pools/{quote(pool, safe='')}/nodes/{quote(node, safe='')}/preempt")
    session.done(f"node {body['nodeId']} of pool {body['poolId']}: {body['state']}", id=node)
