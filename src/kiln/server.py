"""Assembles one Kiln server: store, Dask nodes, scheduler, HTTP app."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib
import logging
import os
import shlex
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from starlette.middleware import Middleware

from kiln.api.app import create_app
from kiln.api.context import Kiln
from kiln.api.deadlines import BodyDeadline
from kiln.commands.control import Control
from kiln.compute import auto_storage
from kiln.compute.late import LateBackend
from kiln.compute.node import identity
from kiln.compute.protocol import ComputeBackend
from kiln.connections import (
    MAX_CONNECTIONS,
    READ_TIMEOUT,
    ConnectionLimits,
    GuardedHttpToolsProtocol,
    connection_cap,
    raise_nofile,
)
from kiln.core.job_token import JobTokens
from kiln.dev_account import DEV_ACCOUNT_KEY, DEV_ACCOUNT_NAME
from kiln.gc_settings import settle_after_start
from kiln.scheduler.engine import Scheduler
from kiln.scheduler.spot import RandomPreemption
from kiln.store.database import Database, sqlite_url
from kiln.wire.times import parse_duration

if TYPE_CHECKING:
    from kiln.compute.dask_backend import DaskBackend

log = logging.getLogger("kiln")

#: The nodes of all pools together unless --max-nodes says otherwise: what Kiln's own cluster holds (one host of
#: KILN_MAX_NODES_PER_HOST, 1,000, by default). Like a new Azure account's core quota, it makes a resize to any
#: int32 count end short with resizeErrors instead of starting nodes for ever.
MAX_NODES = 1000


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8520
    data_dir: Path = Path(".kiln")
    database_url: str | None = None  #: default: SQLite in the data dir
    account_name: str = DEV_ACCOUNT_NAME
    account_key: str = DEV_ACCOUNT_KEY
    #: the shortest startWindow / recurrenceInterval of a job schedule (ISO 8601; Batch's is PT1M)
    min_schedule_interval: str = "PT1M"
    #: the linked storage account of autoStorageContainerName resource files (None: none linked)
    storage_connection_string: str | None = None
    #: seconds a request's headers, and then its body, may take to arrive (stalled clients are cut off)
    read_timeout: float = READ_TIMEOUT
    #: connections served at once (fewer if the descriptor limit is low); more are answered 503 ServerBusy
    max_connections: int = MAX_CONNECTIONS
    #: serve any api-version as the newest (KILN_LOOSE_API_VERSION=1)
    loose_api_version: bool = False
    #: the most nodes the server runs in all its pools; a resize past it ends with resizeErrors
    max_nodes: int = MAX_NODES
    #: how often each low-priority node is preempted at random, on average per hour (0: never)
    spot_preemption_rate: float = 0.0
    #: seeds those draws, so that a test's run repeats them (None: a fresh seed)
    spot_preemption_seed: int | None = None
    #: the scheduler of an existing Dask cluster to run the nodes on (None: Kiln's own, embedded)
    dask_scheduler: str | None = None
    #: attach over plain tcp:// (anything that reaches the cluster could run code on its workers)
    insecure_dask: bool = False
    #: TLS files of the comms with the cluster (None: Dask's distributed.comm.tls.* configuration)
    dask_tls_ca_file: str | None = None
    dask_tls_cert: str | None = None
    dask_tls_key: str | None = None

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "account_name": os.environ.get("KILN_ACCOUNT_NAME", DEV_ACCOUNT_NAME),
            "account_key": os.environ.get("KILN_ACCOUNT_KEY", DEV_ACCOUNT_KEY),
            "database_url": os.environ.get("KILN_DATABASE_URL"),
            "min_schedule_interval": os.environ.get("KILN_MIN_SCHEDULE_INTERVAL", "PT1M"),
            "storage_connection_string": os.environ.get(auto_storage.ENV),
            "read_timeout": float(os.environ.get("KILN_READ_TIMEOUT", READ_TIMEOUT)),
            "max_connections": int(os.environ.get("KILN_MAX_CONNECTIONS", MAX_CONNECTIONS)),
            "loose_api_version": os.environ.get("KILN_LOOSE_API_VERSION", "").lower() in ("1", "true", "yes"),
            "max_nodes": int(os.environ.get("KILN_MAX_NODES") or MAX_NODES),
            "spot_preemption_rate": float(os.environ.get("KILN_SPOT_PREEMPTION_RATE") or 0),
            "spot_preemption_seed": (
                int(os.environ["KILN_SPOT_PREEMPTION_SEED"]) if os.environ.get("KILN_SPOT_PREEMPTION_SEED") else None
            ),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"


class StartRefused(Exception):
    """The server would start but could not do its work; the message says what to run instead."""


def check_node_roots_reachable(data_dir: Path) -> None:
    """Run as root, Kiln runs non-admin tasks as accounts of their own, which must pass through every
    directory above their node roots (<data-dir>/nodes/…): refuse a data dir where every such task would
    fail with TaskAccountSetupFailed, rather than serve it."""
    if not identity.isolating():
        return
    closed = [d for d in (data_dir / "nodes", data_dir, *data_dir.parents) if d.is_dir() and identity.closed(d)]
    if closed:
        paths = " ".join(shlex.quote(str(d)) for d in reversed(closed))
        raise StartRefused(
            f"Kiln runs as root, so it runs non-admin tasks as accounts of their own, and those cannot pass "
            f"through {', '.join(str(d) for d in reversed(closed))} (no o+x): every such task would fail with "
            f"TaskAccountSetupFailed. Make the path traversable:\n\n  chmod o+x {paths}\n\n"
            "or pass a --data-dir whose parents all allow o+x (e.g. under /var/lib or /srv)."
        )


def attach_to_cluster(settings: Settings, data_dir: Path) -> DaskBackend:
    """The backend on the existing Dask cluster settings.dask_scheduler names (its hosts check their own node
    roots); raises StartRefused where attaching would be unsafe."""
    from kiln.compute.cluster_backend import ClusterBackend, ClusterRefused, cluster_security

    assert settings.dask_scheduler is not None, "only for a cluster"
    try:
        security = cluster_security(
            settings.dask_scheduler,
            ca_file=settings.dask_tls_ca_file,
            cert=settings.dask_tls_cert,
            key=settings.dask_tls_key,
            insecure=settings.insecure_dask,
        )
    except ClusterRefused as refused:
        raise StartRefused(str(refused)) from None
    return ClusterBackend(data_dir, settings.dask_scheduler, security)


def local_cluster(data_dir: Path, host: str) -> LateBackend:
    """Kiln's own Dask cluster on this host, imported and started beside the opening port (compute/late.py):
    once it runs, what it made joins what start-up made (gc_settings); if it cannot start, the server stops."""

    def build() -> ComputeBackend:
        from kiln.compute.dask_backend import DaskBackend

        return DaskBackend(data_dir, host=host)

    def stop() -> None:
        log.critical("Kiln cannot run nodes without its Dask cluster: stopping")
        signal.raise_signal(signal.SIGINT)  # a graceful stop, reported as interrupted (not exit 0)

    return LateBackend(
        build,
        prepare=lambda: importlib.import_module("kiln.compute.dask_backend"),
        node_files_here=True,  # DaskBackend's: its hosts are this machine
        on_started=settle_after_start,
        on_failed=stop,
    )


def build_app(settings: Settings) -> FastAPI:
    """The app; its lifespan opens the store, starts the Dask nodes and the scheduler, and stops them.
    Raises StartRefused where non-admin tasks could not run."""
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    backend: ComputeBackend
    if settings.dask_scheduler is None:
        check_node_roots_reachable(data_dir)
        backend = local_cluster(data_dir, settings.host)
    else:
        backend = attach_to_cluster(settings, data_dir)
    database = Database(settings.database_url or sqlite_url(data_dir))
    scheduler = Scheduler(
        database, backend, data_dir=data_dir, account_name=settings.account_name, account_url=settings.endpoint
    )
    state = Kiln(
        control=Control(database, scheduler, backend),
        data_dir=data_dir,
        account_name=settings.account_name,
        account_key=base64.b64decode(settings.account_key),
        min_schedule_interval=parse_duration(settings.min_schedule_interval),
        loose_api_version=settings.loose_api_version,
    )
    scheduler.job_tokens = JobTokens(state.account_key)
    scheduler.max_nodes = settings.max_nodes
    if settings.storage_connection_string:
        scheduler.auto_storage = auto_storage.AutoStorage.from_connection_string(settings.storage_connection_string)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database.migrate()
        await backend.start()  # Kiln's own cluster: begins here, beside the store's recovery and the port
        await scheduler.start()
        preempting = None
        if settings.spot_preemption_rate > 0:
            spot = RandomPreemption(settings.spot_preemption_rate, settings.spot_preemption_seed)
            preempting = asyncio.create_task(spot.run(scheduler), name="kiln-spot-preemption")
        settle_after_start()
        log.info("Kiln is serving at %s (account %s)", settings.endpoint, settings.account_name)
        try:
            yield
        finally:
            if preempting is not None:
                preempting.cancel()
                await asyncio.gather(preempting, return_exceptions=True)
            await scheduler.close()
            await backend.close()
            database.close()
            log.warning("Kiln stopped cleanly")

    app = create_app(state, lifespan=lifespan)
    # innermost, so the route's body reads meet its 408 directly (not through request_ids' task group)
    app.user_middleware.append(Middleware(BodyDeadline, timeout=settings.read_timeout))
    return app


def serve(settings: Settings, *, on_ready=None) -> None:
    """Run in the foreground until SIGINT/SIGTERM; both shut down gracefully."""
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn re-raises a handled SIGTERM after shutting down; a clean stop should exit 0 instead."""

        def handle_exit(self, sig: int, frame) -> None:
            super().handle_exit(sig, frame)
            if sig == signal.SIGTERM:
                self._captured_signals.remove(sig)

    cap = connection_cap(raise_nofile(), settings.max_connections)
    config = uvicorn.Config(
        build_app(settings),
        http=GuardedHttpToolsProtocol.with_limits(ConnectionLimits(settings.read_timeout, cap)),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,  # at "warning" its lines are dropped anyway, after each request formatted their arguments
        lifespan="on",
        timeout_graceful_shutdown=10,
        loop="uvloop",
    )
    server = Server(config)
    if on_ready is not None:
        original = server.startup

        async def startup(sockets=None):
            await original(sockets)
            on_ready()

        server.startup = startup  # type: ignore[method-assign]
    server.run()
