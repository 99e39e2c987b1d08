"""The `kiln` command: serve, demo, the command groups over the REST API (pool, node, job, task, file, schedule,
fault) and `kiln autoscale simulate`."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from kiln.cli import applications, autoscale, dashboard, faults, files, jobs, nodes, pools, schedules, tasks, worker
from kiln.cli.exit_codes import ExitCode
from kiln.cli.session import command

if TYPE_CHECKING:
    from kiln.server import Settings

app = typer.Typer(help="Kiln: an Azure Batch-compatible batch compute service.", no_args_is_help=True)
console = Console(soft_wrap=True)  # keys and URLs must stay on one line
#: The command groups over the REST API, one module each: add a group here.
GROUPS = {
    "pool": pools.app,
    "node": nodes.app,
    "job": jobs.app,
    "task": tasks.app,
    "file": files.app,
    "schedule": schedules.app,
    "fault": faults.app,
    "autoscale": autoscale.app,
    "app": applications.app,
}
for name, group in GROUPS.items():
    app.add_typer(group, name=name)
command(app)(dashboard.dashboard)
app.command()(worker.worker)


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to bind."),
    port: int = typer.Option(8520, help="Port to bind."),
    data_dir: Path = typer.Option(Path(".kiln"), "--data-dir", help="Where the store and node roots live."),
    database_url: str = typer.Option(
        None,
        "--database-url",
        envvar="KILN_DATABASE_URL",
        help="SQLAlchemy URL of the store (default: SQLite in the data dir).",
    ),
    storage_connection_string: str = typer.Option(
        None,
        "--storage-connection-string",
        envvar="KILN_STORAGE_CONNECTION_STRING",
        help="The linked storage account of autoStorageContainerName resource files "
        "(UseDevelopmentStorage=true: Azurite's account on its default port).",
    ),
    loose_api_version: bool = typer.Option(
        False,
        "--loose-api-version",
        help="Serve any api-version as the newest instead of refusing an unknown one (or KILN_LOOSE_API_VERSION=1).",
    ),
    max_nodes: int = typer.Option(
        None,
        "--max-nodes",
        envvar="KILN_MAX_NODES",
        min=0,
        help="The most nodes to run in all pools; a resize past it ends with resizeErrors (default: 1,000).",
    ),
    spot_preemption_rate: float = typer.Option(
        None,
        "--spot-preemption-rate",
        envvar="KILN_SPOT_PREEMPTION_RATE",
        min=0,
        help="Preempt each low-priority node at random, this many times an hour on average (default: never).",
    ),
    dask_scheduler: str = typer.Option(
        None,
        "--dask-scheduler",
        envvar="KILN_DASK_SCHEDULER",
        help="Run the nodes on the existing Dask cluster of this scheduler (tls://HOST:PORT), on its workers that "
        "run `kiln worker` or `dask worker --preload kiln.node` (default: Kiln's own, on this host).",
    ),
    insecure_dask: bool = typer.Option(
        False, "--insecure-dask", help="Allow a tcp:// --dask-scheduler (no TLS: see docs/security.md)."
    ),
    tls_ca_file: str = typer.Option(None, "--tls-ca-file", envvar="KILN_DASK_TLS_CA_FILE", help="Cluster TLS CA."),
    tls_cert: str = typer.Option(None, "--tls-cert", envvar="KILN_DASK_TLS_CERT", help="Cluster TLS certificate."),
    tls_key: str = typer.Option(None, "--tls-key", envvar="KILN_DASK_TLS_KEY", help="Cluster TLS private key."),
) -> None:
    """Run the Batch endpoint in the foreground (SIGTERM or Ctrl-C stops it cleanly)."""
    from kiln.server import Settings, StartRefused  # the server's stack only here: the client commands start fast
    from kiln.server import serve as run_server

    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # Dask's INFO chatter, here and in node workers
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env(
        host=host,
        port=port,
        data_dir=data_dir,
        database_url=database_url,
        storage_connection_string=storage_connection_string,
        loose_api_version=loose_api_version or None,
        max_nodes=max_nodes,
        spot_preemption_rate=spot_preemption_rate,
        dask_scheduler=dask_scheduler,
        insecure_dask=insecure_dask or None,
        dask_tls_ca_file=tls_ca_file,
        dask_tls_cert=tls_cert,
        dask_tls_key=tls_key,
    )

    def ready() -> None:
        console.print(f"Kiln is serving the Azure Batch API at [bold]{settings.endpoint}[/bold]")
        console.print(f"  account name: {settings.account_name}")
        console.print(f"  account key:  {settings.account_key}")
        console.print(f"  data dir:     {settings.data_dir.resolve()}", highlight=False)
        console.print(connection_settings(settings), highlight=False)
        console.print(
            dashboard.sign_in_text(settings.endpoint, settings.account_name, settings.account_key), highlight=False
        )

    try:
        run_server(settings, on_ready=ready)
    except StartRefused as refused:
        Console(stderr=True, soft_wrap=True).print(
            f"[red]kiln serve: refusing to start.[/red] {refused}", highlight=False
        )
        raise typer.Exit(ExitCode.USAGE) from None


def connection_settings(settings: Settings) -> str:
    """What to paste into a shell (read by `az batch`, the `kiln` commands and the SDK snippet) to reach this server."""
    return (
        "\nFor az batch, the kiln commands and the SDK, paste:\n"
        f"  export AZURE_BATCH_ENDPOINT={settings.endpoint}\n"
        f"  export AZURE_BATCH_ACCOUNT={settings.account_name}\n"
        f"  export AZURE_BATCH_ACCESS_KEY={settings.account_key}\n"
        "and in Python:\n"
        "  import os; from azure.batch import BatchClient; from azure.core.credentials import AzureNamedKeyCredential\n"
        '  client = BatchClient(os.environ["AZURE_BATCH_ENDPOINT"], AzureNamedKeyCredential('
        'os.environ["AZURE_BATCH_ACCOUNT"], os.environ["AZURE_BATCH_ACCESS_KEY"]))'
    )


@app.command()
def demo(
    port: int = typer.Option(8520, help="Port for the embedded server."),
    keep: bool = typer.Option(False, help="Keep the demo's data directory."),
) -> None:
    """Run the job preparation/release sample from Azure's docs on an embedded server."""
    from kiln.cli.demo import run_demo

    raise typer.Exit(run_demo(port=port, keep=keep, console=console))


if __name__ == "__main__":
    app()
