"""Kiln's REST API from the command line: one signed request, its error told in words."""

from __future__ import annotations

from typing import Any

import httpx
import typer
from rich.console import Console

from kiln.api.auth import SharedKeyAuth

console = Console(soft_wrap=True)


def call(method: str, endpoint: str, path: str, account: str, key: str) -> dict[str, Any]:
    """The JSON body of a 200 answer; otherwise the error is printed and the command exits (1: refused,
    2: unreachable)."""
    url = f"{endpoint.rstrip('/')}{path}"
    try:
        answer = httpx.request(method, url, auth=SharedKeyAuth(account, key), timeout=30)
    except httpx.HTTPError as error:
        console.print(f"[red]cannot reach {endpoint}: {error}[/red]")
        raise typer.Exit(2) from None
    body = answer.json()
    if answer.status_code != 200:
        message = (body.get("message") or {}).get("value", "").split("\n")[0]
        console.print(f"[red]{body.get('code')}: {message}[/red]", highlight=False)
        raise typer.Exit(1)
    return body
