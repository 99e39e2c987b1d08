"""`kiln app …`: application packages, added through Kiln's REST endpoint (Shared Key signed)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import typer

from kiln.cli.session import Session, command

app = typer.Typer(help="Application packages.", no_args_is_help=True)


@command(app)
def add(
    session: Session,
    application: str = typer.Argument(..., help="Application id."),
    version: str = typer.Argument(..., help="Package version."),
    package: Path = typer.Argument(..., exists=True, dir_okay=False, help="The package: a .zip file."),
    default: bool = typer.Option(False, "--default", help="Make it the application's default version."),
    display_name: str = typer.Option(None, "--display-name", help="The application's display name."),
) -> None:
    """Store a package on the server (under its data dir), for applicationPackageReferences to name."""
    path = f"/kiln/applications/{quote(application, safe='')}/versions/{quote(version, safe='')}"
    params = {"default": "true"} if default else {}
    if display_name:
        params["displayName"] = display_name
    body = session.kiln("PUT", path, content=package.read_bytes(), params=params)
    session.done(f"{body['id']}: versions {', '.join(body['versions'])}", **body)
