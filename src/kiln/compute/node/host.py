"""The host agent: one Dask worker serves many nodes, each a NodeAgent with its own root, slots, processes and
launchers.

A node used to be a Dask worker process of its own (~100 MB, a second or more to start, and under a
concurrent start of many a timeout storm). Here a node is an object in the host's worker: starting one is a
few directory operations, and the host's worker, its TLS comms and its lifeline are paid for once per host.
Installed as a worker preload module (`preload=["kiln.compute.node.host"]`): dask_setup registers the kiln_*
comm handlers. Every node call names its node; a node the host does not run answers {"gone": ...}.

Results travel in one long-poll per host (kiln_results), carrying the acknowledgements and the steps to
start of every node on it, so an idle host costs the control plane one call every POLL seconds, not one per
node.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kiln.compute.node import identity, launcher, layout, reaper
from kiln.compute.node.agent import NodeAgent, resolve
from kiln.gc_settings import settle_after_start

logger = logging.getLogger(__name__)

#: How many nodes one host agent serves at most; a node beyond it fails to start, saying so. Launchers start
#: only when a node runs a step, so an idle node costs an object and a few directories; the limit bounds
#: what a host's running nodes may hold (two launcher processes each, ~10 MB apiece, plus their commands).
MAX_NODES_ENV = "KILN_MAX_NODES_PER_HOST"
DEFAULT_MAX_NODES = 1000
#: How often the host checks that its parent (the nanny's process: the server) is still there.
LEASH_INTERVAL = 0.2
#: Reply of a call for a node the host does not run (never started, stopped, lost, or the host restarted).
GONE = "gone"


def max_nodes() -> int:
    return int(os.environ.get(MAX_NODES_ENV) or DEFAULT_MAX_NODES)


class HostAgent:
    """The nodes of one host, by node id, and what they share: the server's lifeline and the long-poll."""

    def __init__(self, limit: int | None = None) -> None:
        self.nodes: dict[str, NodeAgent] = {}
        self.limit = max_nodes() if limit is None else limit
        #: the server's pidfd, handed to every node's launchers (launcher.open_lifeline)
        self.lifeline: int | None = None
        #: processes a predecessor of this host left running, by node root (found once, at start-up)
        self._leftovers: dict[str, list[int]] = {}
        self._result_ready: asyncio.Future[None] | None = None
        self._leash: asyncio.TimerHandle | None = None
        self._closed = False

    def handlers(self) -> dict[str, Callable[..., Any]]:
        return {
            "kiln_ping": self.ping,
            "kiln_node_start": self.start_node,
            "kiln_node_stop": self.stop_node,
            "kiln_node_lose": self.lose_node,
            "kiln_run": self.run,
            "kiln_results": self.results,
            "kiln_kill": self.kill,
            "kiln_kill_processes": self.kill_processes,
            "kiln_list_files": self.list_files,
            "kiln_stat_file": self.stat_file,
            "kiln_read_file": self.read_file,
            "kiln_delete_file": self.delete_file,
        }

    async def ping(self) -> dict[str, Any]:
        import dask

        return {
            "pid": os.getpid(),
            "nodes": len(self.nodes),
            "profile": dask.config.get("distributed.worker.profile.enabled", default=None),
            "tick": dask.config.get("distributed.admin.tick.interval", default=None),
            "loop": type(asyncio.get_running_loop()).__module__,
        }

    # -- nodes -----------------------------------------------------------------------------

    def find_leftovers(self) -> None:
        """One scan of /proc for commands of any node that outlived a predecessor of this host (killed
        together with its launchers); each node kills its own when it starts."""
        self._leftovers = reaper.processes_by_node_root()

    async def start_node(self, node_id: str, node_root: str) -> dict[str, Any]:
        """Lay out the node's root and serve it; {"ok": pid} or {"error": why it cannot start}. Idempotent."""
        if self._closed:
            return {"error": "the host agent is closing"}
        if node_id in self.nodes:
            return {"ok": os.getpid()}
        if len(self.nodes) >= self.limit:
            return {"error": f"the host already runs {len(self.nodes)} nodes, its limit ({MAX_NODES_ENV}={self.limit})"}
        root = str(Path(node_root).absolute())
        self.nodes[node_id] = node = NodeAgent(
            root, lifeline=self.lifeline, on_result=functools.partial(self._result_came, node_id)
        )
        try:
            await asyncio.to_thread(self._prepare_root, root, self._leftovers.pop(root, []))
        except OSError as exc:
            del self.nodes[node_id]
            await node.close()
            return {"error": f"the node root {root} could not be laid out: {exc}"}
        return {"ok": os.getpid()}

    @staticmethod
    def _prepare_root(root: str, leftovers: list[int]) -> None:
        killed = reaper.kill_pids_of(root, leftovers)
        if killed:
            logger.warning("killed %d processes left over on node root %s", len(killed), root)
        layout.create_node_layout(root)
        blocked = identity.unreachable_parent(Path(root)) if identity.isolating() else None
        if blocked is not None:
            logger.warning(
                "non-admin tasks on node root %s will fail: task accounts cannot pass through %s (it lacks o+x)",
                root,
                blocked,
            )

    async def stop_node(self, node_id: str) -> bool:
        """Kill everything the node started and forget it (reboot, reimage, removal); False if unknown."""
        node = self.nodes.pop(node_id, None)
        if node is not None:
            await node.close()
        return node is not None

    async def lose_node(self, node_id: str) -> bool:
        """A fault on demand: the node dies as a crashed VM would, its steps' results lost with it."""
        node = self.nodes.pop(node_id, None)
        if node is not None:
            node.table.running.clear()  # nothing of it is reported any more
            node.table.finished.clear()
            await node.close()
        return node is not None

    # -- steps -----------------------------------------------------------------------------

    async def run(self, node_id: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
        node = self.nodes.get(node_id)
        return {GONE: node_id} if node is None else {"ok": await node.run(steps)}

    async def results(self, timeout: float, nodes: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Long-poll of every node of the host: per node (of `nodes`: {node_id: {ack, ack_started, run}}), take
        the acknowledgements and start the steps sent along; wait up to timeout for any node's result, then
        let each node with results linger for its neighbours (NodeAgent.results); return {"results": {node_id:
        messages}} of the nodes with something to report and {"gone": [...]} of the nodes the host does not
        run."""
        gone = [node_id for node_id in nodes if node_id not in self.nodes]
        asked = {node_id: self.nodes[node_id] for node_id in nodes if node_id in self.nodes}
        for node_id, node in asked.items():
            request = nodes[node_id]
            await node.take(request.get("ack"), request.get("ack_started"), request.get("run"))
        if not any(node.table.finished for node in asked.values()):
            await asyncio.wait([self._next_result()], timeout=timeout)
        reporting = {node_id: node for node_id, node in asked.items() if node.table.finished or node.table.notices}
        await asyncio.gather(*(node.linger() for node in reporting.values()))
        return {"results": {node_id: node.collect() for node_id, node in reporting.items()}, GONE: gone}

    def _result_came(self, node_id: str) -> None:
        """A node's result wakes the long-poll, unless the node is being stopped (the poll no longer asks)."""
        if node_id in self.nodes and self._result_ready is not None:
            resolve(self._result_ready)

    def _next_result(self) -> asyncio.Future[None]:
        if self._result_ready is None or self._result_ready.done():
            self._result_ready = asyncio.get_running_loop().create_future()
        return self._result_ready

    async def kill(self, node_id: str, step_ids: list[str]) -> dict[str, Any]:
        node = self.nodes.get(node_id)
        return {GONE: node_id} if node is None else {"ok": await node.kill(step_ids)}

    async def kill_processes(self, node_id: str, task_dir: str) -> dict[str, Any]:
        """SIGKILL the processes of one task directory of the node (a fault on demand)."""
        node = self.nodes.get(node_id)
        if node is None:
            return {GONE: node_id}
        root = _root(node)
        return {"ok": len(await asyncio.to_thread(reaper.kill_node_processes, root, os.path.join(root, task_dir)))}

    # -- files -----------------------------------------------------------------------------

    async def _file_call(self, node_id: str, op: Callable[..., Any], **kwargs: Any) -> dict[str, Any]:
        node = self.nodes.get(node_id)
        if node is None:
            return {GONE: node_id}
        return await op(node, node_root=_root(node), **kwargs)

    async def list_files(self, node_id: str, path: str, recursive: bool = False) -> dict[str, Any]:
        return await self._file_call(node_id, NodeAgent.list_files, path=path, recursive=recursive)

    async def stat_file(self, node_id: str, path: str) -> dict[str, Any]:
        return await self._file_call(node_id, NodeAgent.stat_file, path=path)

    async def read_file(self, node_id: str, path: str, start: int = 0, end: int | None = None) -> dict[str, Any]:
        return await self._file_call(node_id, NodeAgent.read_file, path=path, start=start, end=end)

    async def delete_file(self, node_id: str, path: str, recursive: bool = False) -> dict[str, Any]:
        return await self._file_call(node_id, NodeAgent.delete_file, path=path, recursive=recursive)

    # -- the host --------------------------------------------------------------------------

    def leash_to_parent(self) -> None:
        """If the worker's parent (the server) dies, even by SIGKILL, the worker exits at once; its launchers
        then see their sockets close and kill every command of every node. Otherwise an orphaned host would
        run its tasks on while a restarted server runs them again. Until the worker is gone, the launchers
        start nothing more (they hold the lifeline)."""
        parent, loop = os.getppid(), asyncio.get_running_loop()
        try:
            self.lifeline = launcher.open_lifeline(parent)
        except ProcessLookupError:
            logger.warning("the host's parent %d is gone; exiting", parent)
            os._exit(1)

        def check() -> None:
            if os.getppid() != parent:
                logger.warning("the host's parent %d is gone; exiting with every command of its nodes", parent)
                os._exit(1)
            self._leash = loop.call_later(LEASH_INTERVAL, check)

        check()

    async def close(self) -> None:
        """Kill everything every node started; idempotent (called from the worker's close)."""
        if self._closed:
            return
        self._closed = True
        if self._leash is not None:
            self._leash.cancel()
        nodes, self.nodes = list(self.nodes.values()), {}
        await asyncio.gather(*(node.close() for node in nodes))
        if self.lifeline is not None:
            os.close(self.lifeline)
            self.lifeline = None


def _root(node: NodeAgent) -> str:
    assert node.root is not None, "a host's nodes have their roots"
    return node.root


#: Extension name under which the host agent is stored on its worker.
EXTENSION = "kiln_host"


def dask_setup(worker: Any) -> None:
    """Preload hook: the host agent's handlers on the worker, its leash to the server, and the processes a
    predecessor left (a host killed together with its launchers leaves its nodes' commands running)."""
    install(worker, HostAgent())


def install(worker: Any, host: HostAgent) -> None:
    """Serve `host`'s handlers on the worker (kiln.node installs a cluster's host agent the same way)."""
    started = time.monotonic()
    host.find_leftovers()
    host.leash_to_parent()
    worker.handlers.update(host.handlers())
    worker.extensions[EXTENSION] = host  # Worker.close() awaits extension.close()
    logger.info("host agent ready in %.3f s (at most %d nodes)", time.monotonic() - started, host.limit)
    settle_after_start()


async def dask_teardown(worker: Any) -> None:
    host = worker.extensions.get(EXTENSION)
    if host is not None:
        await host.close()
