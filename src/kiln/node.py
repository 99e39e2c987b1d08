"""Kiln's host agent on a worker of an existing Dask cluster: `dask worker ADDRESS --preload kiln.node`.

The worker serves Kiln's nodes as the embedded default's host agents do (kiln.compute.node.host), with two
differences. A node's root lives on this host, under its own directory (--node-root-dir, or KILN_NODE_ROOT_DIR):
the server names a node root on its own disk, of which only the last part (the node id) counts here. And
one server at a time owns the host: a server that (re)attaches claims it, and the nodes an earlier server
left running are stopped (that server requeues their tasks when it starts again).

Options come as preload arguments (`--preload-argv --node-root-dir /srv/kiln`) or from the environment
(KILN_NODE_ROOT_DIR, KILN_MAX_NODES_PER_HOST); `kiln worker` sets the environment.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path, PurePath
from typing import Any

import click

from kiln.compute.node.host import MAX_NODES_ENV, HostAgent, dask_teardown, install
from kiln.compute.usage import UsageMeter

__all__ = ["ClusterHostAgent", "dask_setup", "dask_teardown"]

logger = logging.getLogger(__name__)

#: Where this host lays out its nodes' roots.
ROOT_DIR_ENV = "KILN_NODE_ROOT_DIR"
#: A host that has heard nothing from the server that owns it for this long (a cut network, a server gone)
#: stops that server's nodes, killing their commands: the server declares the host lost only after twice
#: this (cluster_backend.HOST_TIMEOUT) and requeues their tasks, which then never run twice at once.
LEASE = float(os.environ.get("KILN_HOST_LEASE") or 15.0)
#: How often the host looks at its lease.
LEASE_CHECK = 1.0


#: The directory under a host's node-root dir that keeps the application packages its server sent.
PACKAGES = ".kiln-packages"


def _write_whole(path: Path, data: bytes) -> None:
    """Written beside and renamed into place: an extraction never reads half a zip."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.part")
    staging.write_bytes(data)
    os.replace(staging, path)


class ClusterHostAgent(HostAgent):
    """A host agent whose node roots are under `root_dir`, owned by the server that claimed it last."""

    def __init__(self, root_dir: Path, limit: int | None = None) -> None:
        super().__init__(limit)
        self.root_dir = root_dir
        root_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(root_dir, 0o755)  # task accounts pass through it to their nodes' roots
        #: the server that owns the host's nodes (None: none since the host started or was released)
        self.session: str | None = None
        self._usage = UsageMeter()
        self.last_contact = time.monotonic()  #: of any call from a server
        self._lease: asyncio.Task[None] | None = None

    def handlers(self) -> dict[str, Callable[..., Any]]:
        own: dict[str, Callable[..., Any]] = {
            "kiln_claim": self.claim,
            "kiln_release": self.release,
            "kiln_node_wipe": self.wipe_node,
            "kiln_put_package": self.put_package,
        }
        every: dict[str, Callable[..., Any]] = {**super().handlers(), **own, "kiln_usage": self.usage}
        return {name: self._in_contact(handler) for name, handler in every.items()}

    def _in_contact(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        """Every call renews the lease of the server that owns the host."""

        @functools.wraps(handler)
        async def call(**kwargs: Any) -> Any:
            self.last_contact = time.monotonic()
            return await handler(**kwargs)

        return call

    async def _keep_lease(self) -> None:
        while True:
            await asyncio.sleep(LEASE_CHECK)
            if self.nodes and time.monotonic() - self.last_contact > LEASE:
                logger.warning("no word from the server for %.0f s: stopping its %d nodes", LEASE, len(self.nodes))
                for node_id in list(self.nodes):
                    await self.stop_node(node_id)

    async def close(self) -> None:
        if self._lease is not None:
            self._lease.cancel()
        await super().close()

    def local_root(self, node_root: str) -> str:
        return str(self.root_dir / PurePath(node_root).name)

    async def claim(self, session: str) -> dict[str, Any]:
        """A server attaches (or attaches again, after it lost the host): every node here stops, its commands
        killed, since the server counts them down already. Returns what the server places nodes by: the
        host's limit and the node roots it has."""
        for node_id in list(self.nodes):
            await self.stop_node(node_id)
        self.session, self.last_contact = session, time.monotonic()
        if self._lease is None:
            self._lease = asyncio.create_task(self._keep_lease(), name="kiln-host-lease")
        roots = [
            entry.name
            for entry in os.scandir(self.root_dir)
            if entry.is_dir(follow_symlinks=False) and entry.name != PACKAGES
        ]
        return {"limit": self.limit, "root_dir": str(self.root_dir), "roots": roots}

    async def put_package(self, name: str, data: bytes) -> str:
        """An application package's zip, sent by the server (its store is on the server's disk): kept under the
        node-root dir for every node of this host to extract from; returns its path here."""
        path = self.root_dir / PACKAGES / PurePath(name).name
        if not path.exists():
            await asyncio.to_thread(_write_whole, path, data)
        return str(path)

    async def release(self, session: str) -> int:
        """The server that owns the host stops: every node stops with it. Returns how many there were."""
        if session != self.session:
            return 0
        stopped = len(self.nodes)
        for node_id in list(self.nodes):
            await self.stop_node(node_id)
        self.session = None
        return stopped

    async def wipe_node(self, node_root: str) -> None:
        """Reimage: the node's root emptied and laid out again, here where it lives."""
        from kiln.compute.dask_backend import wipe_node_root

        await asyncio.to_thread(wipe_node_root, self.local_root(node_root))

    async def usage(self, node_ids: list[str]) -> dict[str, dict[str, float]]:
        """What each of these nodes (those the host runs) uses now (autoscale's node metrics); the host's network
        traffic is shared among all the nodes it runs."""
        roots = {node_id: node.root for node_id, node in self.nodes.items() if node_id in node_ids and node.root}
        return await asyncio.to_thread(self._usage.measure, roots, len(self.nodes))

    async def start_node(self, node_id: str, node_root: str) -> dict[str, Any]:
        return await super().start_node(node_id, self.local_root(node_root))

    async def run(self, node_id: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
        return await super().run(node_id, self._rehome(node_id, steps))

    async def results(self, timeout: float, nodes: dict[str, dict[str, Any]]) -> dict[str, Any]:
        for node_id, request in nodes.items():
            if request.get("run"):
                request["run"] = self._rehome(node_id, request["run"])
        return await super().results(timeout, nodes)

    def _rehome(self, node_id: str, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Steps name the node's root on the server's disk: run them in the node's root on this host."""
        node = self.nodes.get(node_id)
        if node is None or node.root is None:
            return steps
        return [{**step, "node_root": node.root} for step in steps]


@click.command()
@click.option("--node-root-dir", envvar=ROOT_DIR_ENV, required=True, help="Where this host lays out node roots.")
@click.option("--max-nodes", envvar=MAX_NODES_ENV, type=int, default=None, help="The most nodes this host serves.")
def dask_setup(worker: Any, node_root_dir: str, max_nodes: int | None) -> None:
    """Preload hook: serve Kiln's nodes on this worker, their roots under --node-root-dir."""
    install(worker, ClusterHostAgent(Path(node_root_dir).absolute(), max_nodes))
