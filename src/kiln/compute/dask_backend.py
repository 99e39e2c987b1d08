"""The ComputeBackend on Dask: an in-process scheduler and a few host agents, each serving many nodes.

A host agent is one nanny-supervised Dask worker running kiln.compute.node.host (a preload module); a node
is an object in it (a NodeAgent with its own root, slots, processes and launchers), started and stopped by
a call. The backend talks to the hosts over Dask's own comms (rpc ops kiln_*), never with one Dask task per
step, and collects every node's results in one long-poll per host. Host health comes from the scheduler's
worker membership (a SchedulerPlugin): a worker that registers and whose agent answers is up; a worker the
scheduler removes is down, and every node on it with it.

Node start-up is admitted: at most ADMISSION node starts are in flight per host, and a node the host
refuses (its limit, a root it cannot lay out) or that does not start within NODE_START_TIMEOUT fails
visibly (on_node_failed) and is not tried again. Only a host is ever restarted: its nanny restarts its
worker (new address, same name), and a per-host supervisor replaces a nanny that gave up or whose worker
has not come back within DEATH_TIMEOUT; the nodes it had start again on the new worker.

Every Dask comm (scheduler, nannies, workers, the backend's calls) is TLS with mutual authentication, with a
CA and certificate made in memory at each start: the workers run as root and Dask runs any function it is
sent, while tasks run as other users on the same host and can see every listening port.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.machinery
import logging
import os
import shutil
import signal
import sys
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Dask's defaults that cost Kiln CPU for nothing it uses. Read once, when distributed is first
#: imported: set here for the server, passed on to the workers.
#: - comm.offload: Dask sizes every message it sends (dask.sizeof, a walk of the whole structure) to
#:   decide whether to serialize it on a thread; Kiln's messages are small and many.
#: - admin.tick.interval: every Dask server (the scheduler, each nanny, each worker) wakes its loop every
#:   20 ms to time it, for a warning and a dashboard metric: 13% of a core on an idle 2-node pool
#:   (measured), 3% at 1 s. Unresponsive-loop warnings still come (their limit is 3 s).
#: - admin.system-monitor.interval: psutil samples for Dask's dashboard, which Kiln does not serve.
#: - admin.event-loop: the workers run on uvloop, as the server does (uvicorn): a step is mostly event
#:   loop work (callbacks, futures, socket readiness), ~10% less node CPU per short task (measured).
DASK_ENV = {
    "DASK_DISTRIBUTED__COMM__OFFLOAD": "False",
    "DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL": "1s",
    "DASK_DISTRIBUTED__ADMIN__SYSTEM_MONITOR__INTERVAL": "5s",
    "DASK_DISTRIBUTED__ADMIN__EVENT_LOOP": "uvloop",
}
for _name, _value in DASK_ENV.items():
    os.environ.setdefault(_name, _value)

import dask  # after the environment above
from distributed import Nanny, Scheduler
from distributed.core import ConnectionPool, PooledRPCCall, Status
from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.security import Security

from kiln.compute.node import agent, files, host, layout, reaper
from kiln.compute.protocol import (
    FileEntry,
    NodeDownCallback,
    NodeFailedCallback,
    NodeUnavailable,
    NodeUpCallback,
    ResultsCallback,
    Step,
    StepResult,
    Withdrawal,
)
from kiln.compute.usage import UsageMeter

logger = logging.getLogger(__name__)

#: Bound of any call to a host's agent.
RPC_TIMEOUT = 10.0
#: How long the host agent holds a kiln_results call open when no node has anything to report.
POLL_TIMEOUT = 2.0
#: Bound of a kill: the agent waits up to twice its KILL_GRACE.
KILL_TIMEOUT = 2 * agent.KILL_GRACE + RPC_TIMEOUT
#: How long a registered worker's agent may take to answer its first ping.
PROBE_TIMEOUT = 10.0
#: A worker must reach the scheduler within this, or its nanny gives up.
DEATH_TIMEOUT = 30.0
#: Graceful close of a worker before its nanny kills it.
NANNY_CLOSE_TIMEOUT = 5.0
#: How often a host's supervisor looks at its nanny; pause after the first failed start (doubling).
SUPERVISE_INTERVAL, FIRST_BACKOFF, MAX_BACKOFF = 0.25, 0.1, 10.0
#: The scheduler drops a worker that sent no heartbeat for this many seconds (a hung host).
WORKER_TTL = 60.0
#: Node starts in flight at once per host: each lays out a root (a few mkdir, chown, chmod and a uid claim
#: under the host-wide registry's lock) on the host's threads. A pool of 1,000 waits its turn instead of
#: timing out all at once.
ADMISSION = 8
#: A node whose start the host has not answered within this fails (visibly, never retried): the host is
#: up but cannot take it.
NODE_START_TIMEOUT = 60.0
#: How many host agents the embedded default spawns on this machine; nodes go to the one with fewest.
HOSTS_ENV = "KILN_HOST_AGENTS"
DEFAULT_HOSTS = 1
#: Worker config: the sampling profiler has been seen to segfault workers (see ARCHITECTURE.md); and
#: DASK_ENV's settings as this process's environment has them, since the nanny hands its worker the
#: server's whole config, which wins over the worker's environment, and the server may have imported dask
#: before this module set the environment.
WORKER_CONFIG = dask.config.merge(
    {"distributed": {"worker": {"profile": {"enabled": False}, "http": {"routes": []}}}},
    dask.config.collect_env({name: os.environ[name] for name in DASK_ENV}),
)
#: The scheduler's and workers' HTTP servers (dashboard, metrics, info pages) are not TLS and Kiln reads none of
#: them: they serve nothing (Dask starts them whatever `dashboard` says).
SCHEDULER_CONFIG: dict[str, Any] = {"distributed.scheduler.http.routes": []}
AGENT_MODULE = "kiln.compute.node.host"

#: What crosses the per-node event queue, in the order the callbacks must see it.
UP, DOWN, FAILED, RESULTS, STOP = "up", "down", "failed", "results", "stop"

#: File-operation errors the agent reports by name, raised again here.
FILE_ERRORS: dict[str, type[Exception]] = {
    "FileNotFoundError": FileNotFoundError,
    "NotADirectoryError": NotADirectoryError,
    "IsADirectoryError": IsADirectoryError,
    "DirectoryNotEmpty": files.DirectoryNotEmpty,
    "PermissionError": PermissionError,
    "ValueError": ValueError,
}


async def _no_results(node_id: str, results: list[StepResult]) -> None:
    logger.warning("no on_results callback; dropped %d results of node %s", len(results), node_id)


async def _no_event(node_id: str) -> None:
    return None


async def _no_failure(node_id: str, message: str) -> None:
    logger.warning("node %s failed to start: %s", node_id, message)


def host_count() -> int:
    return max(1, int(os.environ.get(HOSTS_ENV) or DEFAULT_HOSTS))


@dataclass(eq=False, slots=True)
class _Host:
    """One host agent: its worker (`address`, set once registered) and the nodes it serves."""

    name: str
    nodes: dict[str, _Node] = field(default_factory=dict)
    nanny: Nanny | None = None
    supervisor: asyncio.Task[None] | None = None
    stopping: bool = False  #: the supervisor must stop (close)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    down_since: float | None = None  #: loop time since which the host has had no worker up
    address: str | None = None
    up: bool = False  #: the agent at `address` answered
    pid: int | None = None  #: of the worker process, as the agent reported it
    probe: asyncio.Task[None] | None = None
    pump: asyncio.Task[None] | None = None
    pump_stop: asyncio.Event = field(default_factory=asyncio.Event)
    #: node starts in flight at once (ADMISSION)
    admission: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(ADMISSION))


@dataclass(eq=False, slots=True)
class _Node:
    """The backend's view of one node; up once its host's current worker has started it."""

    node_id: str
    node_root: str
    host: _Host
    up: bool = False
    #: its start failed (on_node_failed was made): it is not started again, not even on a new worker
    failed: bool = False
    #: stopped for good, or for a restart in progress: not started when its host comes (back) up
    stopping: bool = False
    starter: asyncio.Task[None] | None = None
    #: callbacks to make, in order: (kind, payload, delivered future or None)
    events: asyncio.Queue[tuple[str, Any, asyncio.Future[None] | None]] = field(default_factory=asyncio.Queue)
    reporter: asyncio.Task[None] | None = None
    #: steps for the node that ride on its host's next poll: set while the pump delivers the node's results,
    #: since the scheduler answers a batch of results with steps to refill the slots they freed
    outbox: list[dict[str, Any]] | None = None
    #: what the next poll acknowledges: the ids of results and of notices the last one delivered
    ack: list[str] = field(default_factory=list)
    ack_started: list[str] = field(default_factory=list)
    #: serialises restart and remove of the node
    lifecycle: asyncio.Lock = field(default_factory=asyncio.Lock)


class _Membership(SchedulerPlugin):
    """Tells the backend when workers join and leave the scheduler."""

    name = "kiln-membership"

    def __init__(self, backend: DaskBackend) -> None:
        self.backend = backend

    def add_worker(self, scheduler: Scheduler, worker: str) -> None:
        self.backend._worker_added(str(scheduler.workers[worker].name), worker)

    def remove_worker(self, scheduler: Scheduler, worker: str, **kwargs: Any) -> None:
        self.backend._worker_removed(worker)


class DaskBackend:
    """ComputeBackend with an embedded Dask scheduler and `hosts` host agents; every address binds to `host`."""

    node_files_here = True

    def __init__(self, data_dir: Path, host: str = "127.0.0.1", hosts: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.host_count = host_count() if hosts is None else hosts
        self.on_results: ResultsCallback = _no_results
        self.on_node_up: NodeUpCallback = _no_event
        self.on_node_down: NodeDownCallback = _no_event
        self.on_node_failed: NodeFailedCallback = _no_failure
        self._nodes: dict[str, _Node] = {}
        self._hosts: dict[str, _Host] = {}
        self._scheduler: Scheduler | None = None
        self._pool: ConnectionPool | None = None
        self._security: Security | None = None
        self._closing = False
        self._usage = UsageMeter()  #: the nodes' usage, measured on this host (where their roots are)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        _spawn_without_main()
        self._security = security = await asyncio.to_thread(Security.temporary)  # an RSA key: ~0.1 s
        with dask.config.set(SCHEDULER_CONFIG):
            self._scheduler = await Scheduler(
                host=self.host,
                port=0,
                protocol="tls",
                security=security,
                dashboard=False,
                dashboard_address=f"{self.host}:0",
                worker_ttl=WORKER_TTL,
            )
        self._scheduler.add_plugin(_Membership(self))
        self._pool = await ConnectionPool(
            limit=256, timeout=RPC_TIMEOUT, connection_args=security.get_connection_args("client")
        )
        for index in range(self.host_count):  # booting now, so that a pool's nodes need not wait for it
            each = self._hosts[f"kiln-host-{index}"] = _Host(f"kiln-host-{index}")
            self._supervise(each)

    @property
    def scheduler_address(self) -> str:
        assert self._scheduler is not None, "start() first"
        return self._scheduler.address

    def _rpc(self, address: str) -> PooledRPCCall:
        assert self._pool is not None, "start() first"
        return self._pool(address)

    async def close(self) -> None:
        """Stop every host (and so every node) and the scheduler within a bounded time; no callbacks after this
        starts."""
        if self._closing:
            return
        self._closing = True
        nodes = list(self._nodes.values())
        for node in nodes:
            if node.starter is not None:
                node.starter.cancel()
            if node.reporter is not None:
                node.reporter.cancel()
        hosts = list(self._hosts.values())
        for each in hosts:
            self._stop_tasks(each)
        await asyncio.gather(*(self._stop_host(each) for each in hosts))
        await asyncio.to_thread(_reap, [node.node_root for node in nodes])
        self._nodes.clear()
        tasks = [t for n in nodes for t in (n.starter, n.reporter) if t is not None]
        tasks += [t for h in hosts for t in (h.supervisor, h.probe, h.pump) if t is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=RPC_TIMEOUT)
        if self._scheduler is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._scheduler.close(), NANNY_CLOSE_TIMEOUT)
        if self._pool is not None:
            await self._pool.close()

    async def add_node(self, node_id: str, node_root: str) -> None:
        """Returns at once: the node goes to the host with the fewest nodes and starts when that host is up and
        admits it (on_node_up, or on_node_failed)."""
        if self._closing or self._pool is None:
            raise RuntimeError("the backend is not running")
        if node_id in self._nodes:
            raise ValueError(f"node {node_id!r} exists already")
        home = self._home(node_id)
        node = self._nodes[node_id] = home.nodes[node_id] = _Node(node_id, str(Path(node_root).absolute()), home)
        node.reporter = asyncio.create_task(self._report(node), name=f"kiln-report-{node_id}")
        if home.up:
            self._start_node(node)

    async def remove_node(self, node_id: str) -> None:
        """on_node_down is made (if the node was up) before this returns, unless called from a callback."""
        node = self._nodes.get(node_id)
        if node is None:
            return
        async with node.lifecycle:
            if self._nodes.get(node_id) is not node:
                return  # removed meanwhile
            await self._stop_node(node)
            del self._nodes[node_id]
            node.host.nodes.pop(node_id, None)
        if asyncio.current_task() is node.reporter:  # a callback removes its own node: don't wait for it
            node.events.put_nowait((STOP, None, None))
            return
        with contextlib.suppress(asyncio.TimeoutError):  # a callback that hangs must not hang us
            await asyncio.wait_for(self._enqueue(node, STOP), RPC_TIMEOUT)

    async def restart_node(self, node_id: str, *, wipe: bool = False) -> None:
        """Returns once the node's processes are gone (on_node_down is queued); on_node_up follows later."""
        node = self._node(node_id)
        async with node.lifecycle:
            await self._stop_node(node)
            if wipe:
                await self._wipe(node)
            if self._nodes.get(node_id) is node and not self._closing:
                node.stopping = node.failed = False
                if node.host.up:
                    self._start_node(node)

    def _home(self, node_id: str) -> _Host:
        """Where a new node goes: the host with the fewest nodes."""
        return min(self._hosts.values(), key=lambda each: len(each.nodes))

    async def _wipe(self, node: _Node) -> None:
        await asyncio.to_thread(wipe_node_root, node.node_root)

    async def measure_usage(self, roots: Mapping[str, str]) -> dict[str, dict[str, float]]:
        # every node is on this machine: they share its network traffic
        return await asyncio.to_thread(self._usage.measure, roots, len(self._nodes))

    def node_address(self, node_id: str) -> str | None:
        return None  # every host is this machine

    def is_up(self, node_id: str) -> bool:
        node = self._nodes.get(node_id)
        return node is not None and node.up

    def worker_pid(self, node_id: str) -> int | None:
        """Pid of the process the node lives in: its host's worker (diagnostics and tests)."""
        node = self._nodes.get(node_id)
        return node.host.pid if node is not None and node.up else None

    async def lose(self, node_id: str) -> bool:
        """The node dies as a crashed VM would: its processes are killed and its results lost; it boots again
        (on_node_down, then on_node_up), as a nanny restarts a worker. Its host's other nodes go on."""
        node = self._nodes.get(node_id)
        if node is None or not node.up:
            return False
        self._node_down(node)
        with contextlib.suppress(Exception):  # a host that went away meanwhile took the node with it
            await self._host_call(node, "kiln_node_lose", KILL_TIMEOUT)
        if node.host.up and not node.stopping:
            self._start_node(node)
        return True

    async def kill_processes(self, node_id: str, task_dir: str) -> int:
        return int(await self._call(node_id, "kiln_kill_processes", task_dir=task_dir))

    def _node(self, node_id: str) -> _Node:
        try:
            return self._nodes[node_id]
        except KeyError:
            raise NodeUnavailable(f"unknown node {node_id!r}") from None

    # -- nodes on their host -----------------------------------------------------------------

    def _start_node(self, node: _Node) -> None:
        if node.starter is not None and not node.starter.done():
            return
        node.starter = asyncio.create_task(self._admit(node, node.host.address), name=f"kiln-start-{node.node_id}")

    async def _admit(self, node: _Node, address: str | None) -> None:
        """Start the node on its host's worker at `address`, once the host admits another start."""
        each = node.host
        async with each.admission:
            if address is None or each.address != address or node.stopping or node.failed or node.up:
                return  # the worker changed (its successor starts the node) or the node is not wanted now
            try:
                reply = await asyncio.wait_for(
                    self._rpc(address).kiln_node_start(node_id=node.node_id, node_root=node.node_root),
                    NODE_START_TIMEOUT,
                )
            except Exception as exc:
                if each.address != address or node.stopping:
                    return  # the worker went away: its successor starts the node
                reply = {"error": f"its host did not start it within {NODE_START_TIMEOUT:.0f} s ({exc!r})"}
        if each.address != address or node.stopping:
            return
        if "error" in reply:
            logger.warning("node %s failed to start: %s", node.node_id, reply["error"])
            node.failed = True
            node.events.put_nowait((FAILED, reply["error"], None))
            return
        node.up, node.outbox, node.ack, node.ack_started = True, None, [], []
        node.events.put_nowait((UP, None, None))

    def _node_down(self, node: _Node) -> None:
        """The node's processes are gone (or going): its steps are lost with it."""
        if node.starter is not None:
            node.starter.cancel()
        if node.up:
            node.up, node.outbox = False, None
            if not self._closing:
                node.events.put_nowait((DOWN, None, None))

    async def _stop_node(self, node: _Node) -> None:
        """Down, then its host kills what it started and forgets it (bounded; a host that is gone took it)."""
        node.stopping = True
        self._node_down(node)
        if node.host.up:
            try:
                await self._host_call(node, "kiln_node_stop", KILL_TIMEOUT)
            except Exception as exc:
                logger.warning("node %s: its host did not stop it: %r", node.node_id, exc)

    async def _host_call(self, node: _Node, op: str, timeout: float = RPC_TIMEOUT, **kwargs: Any) -> Any:
        """A call about the node to its host's worker, whether or not the node is up."""
        address = node.host.address
        if not node.host.up or address is None:
            raise NodeUnavailable(f"the host of node {node.node_id!r} is not up")
        try:
            return await asyncio.wait_for(getattr(self._rpc(address), op)(node_id=node.node_id, **kwargs), timeout)
        except (TimeoutError, OSError) as exc:
            raise NodeUnavailable(f"node {node.node_id!r} did not answer {op}: {exc!r}") from exc

    # -- hosts -------------------------------------------------------------------------------

    def _supervise(self, each: _Host) -> None:
        each.stopping = False
        each.wake = asyncio.Event()
        each.supervisor = asyncio.create_task(self._supervisor(each), name=f"kiln-supervise-{each.name}")

    async def _supervisor(self, each: _Host) -> None:
        """Keep one live nanny for the host: start it, and replace it if it gave up or its worker stays away."""
        loop = asyncio.get_running_loop()
        failures = 0
        while not each.stopping:
            nanny = each.nanny
            stuck = each.down_since is not None and loop.time() - each.down_since > DEATH_TIMEOUT
            if nanny is not None and nanny.status == Status.running and not stuck:
                await self._pause(each, SUPERVISE_INTERVAL)
                continue
            if nanny is not None:
                logger.warning(
                    "host %s: replacing its nanny (%s)",
                    each.name,
                    "worker did not come back" if stuck else f"nanny {nanny.status.name}",
                )
                each.nanny = None
                await self._close_nanny(each, nanny)
                if each.address is not None:  # gone with it, though the scheduler may not have noticed yet
                    self._worker_removed(each.address)
            if failures:
                await self._pause(each, min(FIRST_BACKOFF * 2 ** (failures - 1), MAX_BACKOFF))
            if each.stopping:
                break
            failures = 0 if await self._start_nanny(each) else failures + 1

    @staticmethod
    async def _pause(each: _Host, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(each.wake.wait(), seconds)

    async def _start_nanny(self, each: _Host) -> bool:
        """Start a nanny, which starts the worker; membership events do the rest. Never cancelled midway."""
        each.down_since = asyncio.get_running_loop().time()
        nanny = each.nanny = Nanny(
            self.scheduler_address,
            name=each.name,
            nthreads=1,
            host=self.host,
            dashboard=False,
            dashboard_address=f"{self.host}:0",
            memory_limit=0,
            death_timeout=DEATH_TIMEOUT,
            preload=[AGENT_MODULE],
            security=self._security,  # the nanny's worker gets it too
            local_directory=str(self.data_dir / "dask-scratch"),
            env={"DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False", **DASK_ENV},
            # Nanny merges this over the global config one level deep: pass whole subtrees.
            config=dask.config.merge(dask.config.config, WORKER_CONFIG),
        )
        try:
            await nanny
            return True
        except Exception as exc:
            logger.warning("host %s: worker failed to start: %r", each.name, exc)
            return False

    async def _close_nanny(self, each: _Host, nanny: Nanny) -> None:
        """Close a nanny and its worker (bounded); if that fails, SIGKILL the worker process we started."""
        pid = nanny.pid
        try:
            await asyncio.wait_for(nanny.close(timeout=NANNY_CLOSE_TIMEOUT), 3 * NANNY_CLOSE_TIMEOUT)
        except Exception:
            logger.exception("host %s: nanny did not close cleanly", each.name)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    async def _stop_host(self, each: _Host) -> None:
        """Stop the supervisor, close the nanny and worker (which kills every node's commands)."""
        each.stopping = True
        each.wake.set()
        if each.supervisor is not None:
            with contextlib.suppress(Exception):  # it finishes a nanny start in progress first
                await asyncio.wait_for(asyncio.shield(each.supervisor), DEATH_TIMEOUT + 4 * NANNY_CLOSE_TIMEOUT)
        nanny, each.nanny = each.nanny, None
        if nanny is not None:
            await self._close_nanny(each, nanny)
        if each.address is not None:  # the scheduler may not have noticed yet
            self._worker_removed(each.address)

    # -- membership --------------------------------------------------------------------------

    def _worker_added(self, name: str, address: str) -> None:
        each = self._hosts.get(name)
        if each is None or self._closing:
            return  # not one of ours (a shared cluster), or shutting down
        if each.address is not None and each.address != address:
            self._worker_removed(each.address)
        each.address, each.up = address, False
        each.probe = asyncio.create_task(self._probe(each, address), name=f"kiln-probe-{name}")

    def _worker_removed(self, address: str) -> None:
        each = next((h for h in self._hosts.values() if h.address == address), None)
        if each is None:
            return
        each.address, each.up, each.pid = None, False, None
        each.down_since = asyncio.get_running_loop().time()
        self._stop_tasks(each)
        for node in each.nodes.values():
            self._node_down(node)

    def _stop_tasks(self, each: _Host) -> None:
        if each.probe is not None:
            each.probe.cancel()
        each.pump_stop.set()

    async def _probe(self, each: _Host, address: str) -> None:
        """The host is up once its agent answers; then its nodes start and results start flowing."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PROBE_TIMEOUT
        while True:
            try:
                info = await asyncio.wait_for(self._rpc(address).kiln_ping(), RPC_TIMEOUT)
                break
            except Exception as exc:  # not listening yet, or no agent (its preload failed)
                if each.address != address or loop.time() > deadline:
                    logger.warning("host %s: agent at %s did not answer: %r", each.name, address, exc)
                    return
                await asyncio.sleep(0.05)
        if each.address != address or self._closing:
            return
        if info.get("profile"):
            logger.warning("host %s: the worker's sampling profiler is on", each.name)
        each.up, each.pid, each.down_since = True, info["pid"], None
        each.pump_stop = asyncio.Event()
        each.pump = asyncio.create_task(self._pump(each, address, each.pump_stop), name=f"kiln-pump-{each.name}")
        for node in each.nodes.values():
            if not node.stopping and not node.failed:
                self._start_node(node)

    # -- results -----------------------------------------------------------------------------

    async def _pump(self, each: _Host, address: str, stop: asyncio.Event) -> None:
        """Long-poll the host for every node up on it; acknowledge each batch on the next call, once it has been
        delivered, and carry the steps queued for each node meanwhile."""
        failures = 0
        while not stop.is_set():
            polled = [node for node in each.nodes.values() if node.up]
            sent: dict[str, list[dict[str, Any]]] = {}
            requests = {}
            for node in polled:
                sent[node.node_id], node.outbox = node.outbox or [], None
                requests[node.node_id] = {"ack": node.ack, "ack_started": node.ack_started, "run": sent[node.node_id]}
            call = self._rpc(address).kiln_results(timeout=POLL_TIMEOUT, nodes=requests)
            try:
                reply = await _until(asyncio.wait_for(call, POLL_TIMEOUT + RPC_TIMEOUT), stop)
            except Exception as exc:  # OSError and timeouts mostly; never let the pump die
                for node in polled:  # sent again with the next poll (the agent ignores ids it has)
                    if node.up and sent[node.node_id]:
                        node.outbox = sent[node.node_id] + (node.outbox or [])
                failures += 1
                log = logger.info if isinstance(exc, (OSError, asyncio.TimeoutError)) else logger.error
                log("host %s: results poll failed (%d): %r", each.name, failures, exc)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), min(0.05 * 2**failures, 2.0))
                continue
            if reply is None or stop.is_set():
                return  # the worker is gone: its results would follow its nodes' on_node_down
            failures = 0
            await self._deliver(each, polled, reply)

    async def _deliver(self, each: _Host, polled: list[_Node], reply: dict[str, Any]) -> None:
        for node in polled:
            node.ack, node.ack_started = [], []
        deliveries = []
        for node_id, messages in reply["results"].items():
            reporting = each.nodes.get(node_id)
            if reporting is None or not reporting.up or not messages:
                continue  # gone since: its results would follow its on_node_down
            reporting.ack = [m["step_id"] for m in messages if not m.get("running")]
            reporting.ack_started = [m["step_id"] for m in messages if m.get("running")]
            reporting.outbox = []
            deliveries.append(self._enqueue(reporting, RESULTS, [StepResult.from_message(m) for m in messages]))
        for node_id in reply[host.GONE]:  # up here, unknown there: its processes are gone
            lost = each.nodes.get(node_id)
            if lost is not None and lost.up:
                logger.warning("node %s: its host no longer runs it; starting it again", node_id)
                self._node_down(lost)
                self._start_node(lost)
        await asyncio.gather(*deliveries)

    async def _enqueue(self, node: _Node, kind: str, payload: Any = None) -> None:
        """Queue a callback and wait until it has been made (the reporter keeps the order)."""
        if node.reporter is None or node.reporter.done():
            return
        done = asyncio.get_running_loop().create_future()
        node.events.put_nowait((kind, payload, done))
        await asyncio.wait({done, node.reporter}, return_when=asyncio.FIRST_COMPLETED)

    async def _report(self, node: _Node) -> None:
        """Make one node's callbacks one at a time, in order; up and down alternate."""
        reported_up = False
        while True:
            kind, payload, done = await node.events.get()
            try:
                if kind == STOP:
                    return
                if kind == UP and not reported_up:
                    reported_up = True
                    await self.on_node_up(node.node_id)
                elif kind == DOWN and reported_up:
                    reported_up = False
                    await self.on_node_down(node.node_id)
                elif kind == FAILED:
                    await self.on_node_failed(node.node_id, payload)
                elif kind == RESULTS:
                    await self.on_results(node.node_id, payload)
            except Exception:
                logger.exception("node %s: %s callback failed", node.node_id, kind)
            finally:
                if done is not None and not done.done():
                    done.set_result(None)

    # -- calls to the agent ------------------------------------------------------------------

    async def _call(self, node_id: str, op: str, timeout: float = RPC_TIMEOUT, **kwargs: Any) -> Any:
        """A call about an up node; its value, or the error the agent reported by name raised again."""
        node = self._node(node_id)
        if not node.up:
            raise NodeUnavailable(f"node {node_id!r} is not up")
        reply = await self._host_call(node, op, timeout, **kwargs)
        if host.GONE in reply:
            raise NodeUnavailable(f"node {node_id!r} is not on its host any more")
        if "error" in reply:
            raise FILE_ERRORS.get(reply["error"], OSError)(reply["message"])
        return reply["ok"]

    async def run(self, node_id: str, steps: list[Step]) -> None:
        """One message for the whole batch: the host's next poll while the pump delivers the node's results (one
        round trip per batch instead of two), else a call of its own. On NodeUnavailable the steps may or may
        not have started; re-sending the same step ids is safe (the agent ignores ids it already has)."""
        node = self._node(node_id)
        messages = [s.to_message() for s in steps]
        if node.up and node.outbox is not None:
            node.outbox.extend(messages)
            return
        await self._call(node_id, "kiln_run", steps=messages)

    async def kill(self, node_id: str, step_ids: list[str]) -> None:
        node = self._node(node_id)
        if node.outbox:  # not sent yet: they never start
            killed = set(step_ids)
            node.outbox = [m for m in node.outbox if m["step_id"] not in killed]
        await self._call(node_id, "kiln_kill", timeout=KILL_TIMEOUT, step_ids=list(step_ids))

    async def withdraw(self, node_id: str, step_ids: list[str]) -> Withdrawal:
        node = self._node(node_id)
        asked = set(step_ids)
        unsent = [m["step_id"] for m in node.outbox or () if m["step_id"] in asked]
        if unsent:  # not sent yet: they never start
            node.outbox = [m for m in node.outbox or () if m["step_id"] not in asked]
        rest = [i for i in step_ids if i not in unsent]
        answer = await self._call(node_id, "kiln_withdraw", step_ids=rest) if rest else {}
        return Withdrawal(withdrawn=[*unsent, *answer.get("withdrawn", ())], started=list(answer.get("started", ())))

    async def list_files(self, node_id: str, path: str, recursive: bool) -> list[FileEntry]:
        entries = await self._call(node_id, "kiln_list_files", path=path, recursive=recursive)
        return [FileEntry(**e) for e in entries]

    async def stat_file(self, node_id: str, path: str) -> FileEntry:
        return FileEntry(**await self._call(node_id, "kiln_stat_file", path=path))

    async def read_file(self, node_id: str, path: str, start: int = 0, end: int | None = None) -> bytes:
        return bytes(await self._call(node_id, "kiln_read_file", path=path, start=start, end=end))

    async def delete_file(self, node_id: str, path: str, recursive: bool) -> None:
        await self._call(node_id, "kiln_delete_file", path=path, recursive=recursive)


def _spawn_without_main() -> None:
    """A nanny starts its worker with multiprocessing's spawn, which has the child import the parent's __main__
    first: for `kiln serve` the whole server and CLI (FastAPI, SQLAlchemy, the SDK models), which a worker never
    uses and which took 6-9 s of a host's start on this loaded 2-core box (1 s idle). spawn skips a main module
    whose spec names a package's __main__ (multiprocessing.spawn._fixup_main_from_name): give it one."""
    main = sys.modules["__main__"]
    spec = getattr(main, "__spec__", None)
    if spec is None or not spec.name.endswith("__main__"):
        main.__spec__ = importlib.machinery.ModuleSpec("kiln.__main__", None)


def _reap(node_roots: list[str]) -> None:
    """Kill what the nodes' commands left behind once their hosts are gone (one scan of /proc for all)."""
    found = reaper.processes_by_node_root()
    for root in node_roots:
        reaper.kill_pids_of(root, found.get(root, []))


async def _until(awaitable: Awaitable[Any], stop: asyncio.Event) -> Any:
    """Await, unless stop is set first (then cancel it and return None)."""
    task = asyncio.ensure_future(awaitable)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
    return None


def wipe_node_root(node_root: str) -> None:
    """Reimage: empty the node root and lay it out again."""
    root = Path(node_root)
    if root.is_dir():
        for child in root.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
    layout.create_node_layout(root)
