"""`kiln node …`: Kiln-specific node commands over the REST API (Shared Key signed)."""

from __future__ import annotations

from urllib.parse import quote

import typer

from kiln.cli import rest
from kiln.cli.tasks import ACCOUNT, ENDPOINT, KEY

app = typer.Typer(help="Compute nodes.", no_args_is_help=True)


@app.command()
def preempt(
    pool: str = typer.Argument(..., help="Pool id."),
    node: str = typer.Argument(..., help="Node id (a low-priority node)."),
    endpoint: str = ENDPOINT,
    account: str = ACCOUNT,
    key: str = KEY,
) -> None:
    """Preempt a low-priority (spot) node now: its tasks are requeued and it comes back as a fresh node."""
    path = f"/kiln/pools/{quote(pool, safe='')}/nodes/{quote(node, safe='')}/preempt"
    body = rest.call("POST", endpoint, path, account, key)
    rest.console.print(f"node {body['nodeId']} of pool {body['poolId']}: {body['state']}", highlight=False)
