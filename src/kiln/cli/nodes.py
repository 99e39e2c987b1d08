"""`kiln node …`: a pool's compute nodes, through the SDK."""

from __future__ import annotations

from urllib.parse import quote

import typer
from azure.batch import models
from azure.batch.models._models import BatchNodeRebootOptions, BatchNodeReimageOptions

from kiln.cli.session import Session, command

app = typer.Typer(help="Compute nodes: list, show, reboot, reimage, delete, preempt.", no_args_is_help=True)

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


#: What becomes of the running tasks of a node that reboots, is reimaged or leaves its pool.
TASKS_HELP = "What becomes of its running tasks: requeue, terminate, taskcompletion or retaineddata."


@command(app)
def reboot(
    session: Session,
    pool: str = POOL,
    node: str = NODE,
    option: str = typer.Option("requeue", "--node-reboot-option", help=TASKS_HELP),
) -> None:
    """Restart a node (its running tasks are requeued)."""
    # always an option: the SDK cannot send this request with an empty body (it gives it no content type)
    options = BatchNodeRebootOptions(node_reboot_kind=option)  # not exported from azure.batch.models
    session.run_to_end(session.client.begin_reboot_node, pool, node, options)
    session.done(f"node {node} rebooted", id=node)


@command(app)
def reimage(
    session: Session,
    pool: str = POOL,
    node: str = NODE,
    option: str = typer.Option("requeue", "--node-reimage-option", help=TASKS_HELP),
) -> None:
    """Reinstall a node's disk (its files go; its running tasks are requeued)."""
    options = BatchNodeReimageOptions(node_reimage_option=option)  # as reboot: never an empty body
    session.run_to_end(session.client.begin_reimage_node, pool, node, options)
    session.done(f"node {node} reimaged", id=node)


@command(app)
def delete(
    session: Session,
    pool: str = POOL,
    node_ids: list[str] = typer.Argument(..., metavar="NODE...", help="Node ids (at most 100)."),
    option: str = typer.Option("requeue", "--node-deallocation-option", help=TASKS_HELP),
) -> None:
    """Remove nodes from a pool, which shrinks by as many (removenodes, as `az batch node delete`); waits until
    the pool is steady again."""
    options = models.BatchNodeRemoveOptions(node_ids=node_ids, node_deallocation_option=option)
    session.run_to_end(session.client.begin_remove_nodes, pool, options)
    session.done(f"{len(node_ids)} node(s) removed from pool {pool}", ids=node_ids)


@command(app)
def preempt(session: Session, pool: str = POOL, node: str = NODE) -> None:
    """Preempt a low-priority (spot) node now (Kiln's own): its tasks are requeued and it comes back fresh."""
    body = session.kiln("POST", f"/kiln/pools/{quote(pool, safe='')}/nodes/{quote(node, safe='')}/preempt")
    session.done(f"node {body['nodeId']} of pool {body['poolId']}: {body['state']}", id=node)
