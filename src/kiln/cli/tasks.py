"""`kiln task …`: commands over the REST API (Shared Key signed, as the SDK signs)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import typer
from rich.table import Table

from kiln.api.context import DEV_ACCOUNT_KEY, DEV_ACCOUNT_NAME
from kiln.cli import rest

app = typer.Typer(help="Tasks.", no_args_is_help=True)
console = rest.console

ENDPOINT = typer.Option("http://127.0.0.1:8520", "--endpoint", envvar="KILN_ENDPOINT", help="Kiln's URL.")
ACCOUNT = typer.Option(DEV_ACCOUNT_NAME, "--account", envvar="KILN_ACCOUNT_NAME", help="Account name.")
KEY = typer.Option(DEV_ACCOUNT_KEY, "--key", envvar="KILN_ACCOUNT_KEY", help="Account key (base64).")


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
    body = rest.call(
        "GET", endpoint, f"/kiln/jobs/{quote(job, safe='')}/tasks/{quote(task, safe='')}/story", account, key
    )
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
