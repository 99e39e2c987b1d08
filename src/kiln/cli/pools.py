"""`kiln pool …`: pools, through the SDK."""

from __future__ import annotations

from pathlib import Path

import typer
from azure.batch import models

from kiln.cli.session import JSON_FILE, Session, command, read_json_file, usage

app = typer.Typer(help="Pools: list, show, create, resize, delete.", no_args_is_help=True)

COLUMNS = [
    ("id", "id"),
    ("state", "state"),
    ("allocation", "allocationState"),
    ("vm size", "vmSize"),
    ("dedicated", "currentDedicatedNodes"),
    ("spot", "currentLowPriorityNodes"),
    ("target", "targetDedicatedNodes"),
    ("slots/node", "taskSlotsPerNode"),
]


@command(app, "list")
def list_pools(session: Session, filter: str = typer.Option(None, help="OData $filter.")) -> None:
    """The account's pools."""
    session.print_list(session.client.list_pools(filter=filter), COLUMNS, "Pools")


@command(app)
def show(session: Session, pool: str = typer.Argument(..., help="Pool id.")) -> None:
    """One pool, every field."""
    session.print_one(session.client.get_pool(pool), f"Pool {pool}")


@command(app)
def create(
    session: Session,
    json_file: Path = JSON_FILE,
    id: str = typer.Option(None, "--id", help="Pool id (without --json-file)."),
    vm_size: str = typer.Option("standard_d2s_v3", help="VM size."),
    nodes: int = typer.Option(1, help="Target dedicated nodes."),
    spot_nodes: int = typer.Option(0, help="Target low-priority (spot) nodes."),
    slots: int = typer.Option(1, help="Task slots per node."),
) -> None:
    """Add a pool from --json-file (Batch's body) or from the options."""
    if json_file is not None:
        body = models.BatchPoolCreateOptions(read_json_file(json_file))
    elif id is not None:
        body = models.BatchPoolCreateOptions(
            id=id,
            vm_size=vm_size,
            target_dedicated_nodes=nodes,
            target_low_priority_nodes=spot_nodes,
            task_slots_per_node=slots,
        )
    else:
        raise usage("kiln pool create needs --json-file or --id")
    session.client.create_pool(body)
    session.done(f"pool {body.id} added", id=body.id)


@command(app)
def resize(
    session: Session,
    pool: str = typer.Argument(..., help="Pool id."),
    nodes: int = typer.Option(None, help="Target dedicated nodes."),
    spot_nodes: int = typer.Option(None, help="Target low-priority (spot) nodes."),
) -> None:
    """Change a pool's target node counts, and wait until it is steady."""
    options = models.BatchPoolResizeOptions(target_dedicated_nodes=nodes, target_low_priority_nodes=spot_nodes)
    session.run_to_end(session.client.begin_resize_pool, pool, options)
    session.done(f"pool {pool} resized", id=pool)


@command(app)
def delete(session: Session, pool: str = typer.Argument(..., help="Pool id.")) -> None:
    """Delete a pool, and wait until it is gone."""
    session.run_to_end(session.client.begin_delete_pool, pool)
    session.done(f"pool {pool} deleted", id=pool)
