"""`kiln worker`: a host of an existing Dask cluster for `kiln serve --dask-scheduler`.

A thin wrapper: it becomes `dask worker SCHEDULER --preload kiln.node` (one thread, no memory limit, no
dashboard, Dask's sampling profiler off) with the node-root directory and node limit in the environment, so
that `dask worker` started by any other tool (dask-jobqueue, dask-kubernetes) serves the same way.
"""

from __future__ import annotations

import os
import shlex
import socket
import sys
from pathlib import Path

import typer

from kiln.cli.exit_codes import ExitCode
from kiln.compute.node import identity


def worker(
    scheduler: str = typer.Argument(..., help="The Dask scheduler's address, e.g. tls://10.0.0.1:8786."),
    node_root_dir: Path = typer.Option(..., "--node-root-dir", help="Where this host lays out its nodes' roots."),
    name: str = typer.Option(
        None, "--name", help="The host's name (default: the machine's); a host back under its name gets its nodes."
    ),
    host: str = typer.Option(None, "--host", help="The address to serve on, one the scheduler and server reach."),
    max_nodes: int = typer.Option(None, "--max-nodes", min=1, help="The most nodes this host serves."),
    insecure_dask: bool = typer.Option(False, "--insecure-dask", help="Allow a tcp:// scheduler (no TLS)."),
    tls_ca_file: str = typer.Option(None, "--tls-ca-file", help="The cluster's TLS CA (PEM)."),
    tls_cert: str = typer.Option(None, "--tls-cert", help="This worker's TLS certificate (PEM)."),
    tls_key: str = typer.Option(None, "--tls-key", help="This worker's TLS private key (PEM)."),
) -> None:
    """Serve Kiln's nodes as a worker of an existing Dask cluster (runs in the foreground)."""
    from kiln.compute.dask_backend import DASK_ENV
    from kiln.compute.node.host import MAX_NODES_ENV
    from kiln.node import ROOT_DIR_ENV

    if scheduler.startswith("tcp://") and not insecure_dask:
        typer.echo(
            f"kiln worker: refusing {scheduler}: over plain TCP anything that reaches the cluster could have this "
            "worker, which runs as root, run any code. Use tls:// with --tls-ca-file/--tls-cert/--tls-key, or pass "
            "--insecure-dask on a network only you use.",
            err=True,
        )
        raise typer.Exit(ExitCode.USAGE)
    root_dir = node_root_dir.absolute()
    existing = next((d for d in (root_dir, *root_dir.parents) if d.is_dir()), root_dir)
    blocked = identity.unreachable_parent(existing / "node") if identity.isolating() else None
    if blocked is not None:
        typer.echo(
            f"kiln worker: refusing --node-root-dir {root_dir}: Kiln runs as root, so it runs non-admin tasks as "
            f"accounts of their own, and those cannot pass through {blocked} (no o+x): every such task would fail "
            f"with TaskAccountSetupFailed. Run `chmod o+x {shlex.quote(str(blocked))}` or choose another directory.",
            err=True,
        )
        raise typer.Exit(ExitCode.USAGE)
    command = [sys.executable, "-m", "distributed.cli.dask_worker", scheduler, "--preload", "kiln.node"]
    command += ["--nthreads", "1", "--memory-limit", "0", "--no-dashboard", "--name", name or socket.gethostname()]
    if host:
        command += ["--host", host]
    for option, value in (("--tls-ca-file", tls_ca_file), ("--tls-cert", tls_cert), ("--tls-key", tls_key)):
        if value:
            command += [option, value]
    env = {**os.environ, **DASK_ENV, "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False"}
    env[ROOT_DIR_ENV] = str(root_dir)
    if max_nodes is not None:
        env[MAX_NODES_ENV] = str(max_nodes)
    os.execve(sys.executable, command, env)
