"""What the `kiln` commands over the REST API share: the endpoint and account options, and one signed call."""

from __future__ import annotations

from typing import Any

import httpx
import typer
from rich.console import Console

from kiln.api.auth import SharedKeyAuth
from kiln.api.context import DEV_ACCOUNT_KEY, DEV_ACCOUNT_NAME

ENDPOINT = typer.Option("http://127.0.0.1:8520", "--endpoint", envvar="KILN_ENDPOINT", help="Kiln's URL.")
ACCOUNT = typer.Option(DEV_ACCOUNT_NAME, "--account", envvar="KILN_ACCOUNT_NAME", help="Account name.")
KEY = typer.Option(DEV_ACCOUNT_KEY, "--key", envvar="KILN_ACCOUNT_KEY", help="Account key (base64).")


def call(
    console: Console, method: str, endpoint: str, path: str, account: str, key: str, ok: int, **kwargs: Any
) -> dict[str, Any]:
    """The JSON answer of a Shared Key signed request; exit 2 when the server cannot be reached, 1 on a Batch
    error (printed as code: message)."""
    try:
        answer = httpx.request(
            method, endpoint.rstrip("/") + path, auth=SharedKeyAuth(account, key), timeout=300, **kwargs
        )
    except httpx.HTTPError as error:
        console.print(f"[red]cannot reach {endpoint}: {error}[/red]")
        raise typer.Exit(2) from None
    body = answer.json()
    if answer.status_code != ok:
        message = (body.get("message") or {}).get("value", "").split("\n")[0]
        console.print(f"[red]{body.get('code')}: {message}[/red]", highlight=False)
        raise typer.Exit(1)
    return body
