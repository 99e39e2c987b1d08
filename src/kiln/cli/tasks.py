"""`kiln task …`: commands over the REST API (Shared Key signed, as the SDK signs)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import typer
from rich.console import Console
from rich.table import Table

from kiln.cli.rest import ACCOUNT, ENDPOINT, KEY, call

app = typer.Typer(help="Tasks.", no_args_is_help=True)
console = Console(soft_wrap=True)


@app.command()
def story(
    job: str = typer.Argument(..., help="Job id."),
    task: str = typer.Argument(..., help="Task id."),
    endpoint: str = ENDPOINT,
    account: str = ACCOUNT,
    key: str = KEY,
    as_json: bool = typer.Option(False, "--json", help="Print the story as JSON."),
) -> None:
    """A task's transitions with what caused each, and why it is where it is."""
    path = f"/kiln/jobs/{quote(job, safe='')}/tasks/{quote(task, safe='')}/story"
    body = call(console, "GET", endpoint, path, account, key, 200)
    if as_json:
        print(json.dumps(body, indent=2))
        return
    console.print(_table(body))
    console.print(f"[bold]{body['taskId']}[/bold]: {body['why']}", highlight=False)


def _table(body: dict[str, Any]) -> Table:
    table = Table(title=f"Story of task {body['taskId']} in job {body['jobId']}", title_justify="left")
    for column in ("at", "kind", "node", "from", "to", "stimulus", "detail"):
        table.add_column(column, overflow="fold")
    for r in body["transitions"]:
        cells = (r["at"], r["kind"], r["nodeId"], r["from"] or "(added)", r["to"], r["stimulus"], r["detail"])
        table.add_row(*(cell or "" for cell in cells))
    return table
