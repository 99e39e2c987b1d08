"""The ComputeBackend on Dask: an in-process scheduler, one nanny-supervised worker per node.

Each worker runs the node agent (kiln.compute.node.agent, a preload module); the backend talks
to it over Dask's own comms (rpc ops kiln_*), never with one Dask task per step. Node health
comes from the scheduler's worker membership (a SchedulerPlugin): a worker that registers and
whose agent answers is up; a worker the scheduler removes is down, whatever the reason.

A worker that dies is restarted by its nanny (new address, same name). A per-node supervisor
covers what the nanny cannot: a nanny that gave up (its worker died while it was starting)
or a worker that has not come back within DEATH_TIMEOUT is replaced by a fresh nanny.

Every Dask comm (scheduler, nannies, workers, the backend's calls) is TLS with mutual authentication, with a
CA and certificate made in memory at each start: the workers run as root and Dask runs any function it is
sent, while tasks run as other users on the same host and can see every listening port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
from collections.abc import Awaitable
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

from kiln.compute.node import agent, files, layout, reaper
from kiln.compute.protocol import (
    FileEntry,
    NodeDownCallback,
    NodeUnavailable,
    NodeUpCallback,
    ResultsCallback,
    Step,
    StepResult,
)

logger = logging.getLogger(__name__)

#: Bound of any call to a node's agent.
RPC_TIMEOUT = 10.0
#: How long the agent holds a kiln_results call open when it has nothing to report.
POLL_TIMEOUT = 2.0
#: Bound of a kill: the agent waits up to twice its KILL_GRACE.
KILL_TIMEOUT = 2 * agent.KILL_GRACE + RPC_TIMEOUT
#: How long a registered worker's agent may take to answer its first ping.
PROBE_TIMEOUT = 10.0
#: A worker must reach the scheduler within this, or its nanny gives up.
DEATH_TIMEOUT = 30.0
#: Graceful close of a worker before its nanny kills it.
NANNY_CLOSE_TIMEOUT = 5.0
#: How often a node's supervisor looks at its nanny; pause after the first failed start (doubling).
SUPERVISE_INTERVAL, FIRST_BACKOFF, MAX_BACKOFF = 0.25, 0.1, 10.0
#: The scheduler drops a worker that sent no heartbeat for this many seconds (a hung node).
WORKER_TTL = 60.0
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
AGENT_MODULE = "kiln.compute.node.agent"

#: What crosses the per-node event queue, in the order the callbacks must see it.
UP, DOWN, RESULTS, STOP = "up", "down", "results", "stop"

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


@dataclass(eq=False, slots=True)
class _Node:
    """The backend's view of one node; `address` is its current worker, set once registered."""

    node_id: str
    node_root: str
    nanny: Nanny | None = None
    supervisor: asyncio.Task[None] | None = None
    stopping: bool = False  #: the supervisor must stop (restart, remove, close)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    down_since: float | None = None  #: loop time since which the node has had no worker up
    address: str | None = None
    up: bool = False  #: the agent at `address` answered
    pid: int | None = None  #: of the worker process, as the agent reported it
    probe: asyncio.Task[None] | None = None
    pump: asyncio.Task[None] | None = None
    pump_stop: asyncio.Event = field(default_factory=asyncio.Event)
    #: callbacks to make, in order: (kind, payload, delivered future or None)
    events: asyncio.Queue[tuple[str, Any, asyncio.Future[None] | None]] = field(default_factory=asyncio.Queue)
    reporter: asyncio.Task[None] | None = None
    #: steps for the node that ride on the pump's next poll: set while the pump delivers results, since
    #: the scheduler answers a batch of results with steps to refill the slots they freed
    outbox: list[dict[str, Any]] | None = None
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
    """ComputeBackend with an embedded Dask scheduler; every address binds to `host`."""

    def __init__(self, data_dir: Path, host: str = "127.0.0.1") -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.on_results: ResultsCallback = _no_results
        self.on_node_up: NodeUpCallback = _no_event
        self.on_node_down: NodeDownCallback = _no_event
        self._nodes: dict[str, _Node] = {}
        self._scheduler: Scheduler | None = None
        self._pool: ConnectionPool | None = None
        self._security: Security | None = None
        self._closing = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
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

    @property
    def scheduler_address(self) -> str:
        assert self._scheduler is not None, "start() first"
        return self._scheduler.address

    def _rpc(self, address: str) -> PooledRPCCall:
        assert self._pool is not None, "start() first"
        return self._pool(address)

    async def close(self) -> None:
        """Stop every node and the scheduler within a bounded time; no callbacks after this starts."""
        if self._closing:
            return
        self._closing = True
        nodes = list(self._nodes.values())
        for node in nodes:
            self._stop_tasks(node)
            if node.reporter is not None:
                node.reporter.cancel()
        await asyncio.gather(*(self._stop_worker(node) for node in nodes))
        self._nodes.clear()
        tasks = [t for n in nodes for t in (n.supervisor, n.probe, n.pump, n.reporter) if t is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=RPC_TIMEOUT)
        if self._scheduler is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._scheduler.close(), NANNY_CLOSE_TIMEOUT)
        if self._pool is not None:
            await self._pool.close()

    async def add_node(self, node_id: str, node_root: str) -> None:
        if self._closing or self._scheduler is None:
            raise RuntimeError("the backend is not running")
        if node_id in self._nodes:
            raise ValueError(f"node {node_id!r} exists already")
        node = self._nodes[node_id] = _Node(node_id, str(Path(node_root).absolute()))
        node.reporter = asyncio.create_task(self._report(node), name=f"kiln-report-{node_id}")
        self._supervise(node)

    async def remove_node(self, node_id: str) -> None:
        """on_node_down is made (if the node was up) before this returns, unless called from a callback."""
        node = self._nodes.get(node_id)
        if node is None:
            return
        async with node.lifecycle:
            if self._nodes.get(node_id) is not node:
                return  # removed meanwhile
            await self._stop_worker(node)
            del self._nodes[node_id]
        if asyncio.current_task() is node.reporter:  # a callback removes its own node: don't wait for it
            node.events.put_nowait((STOP, None, None))
            return
        with contextlib.suppress(asyncio.TimeoutError):  # a callback that hangs must not hang us
            await asyncio.wait_for(self._enqueue(node, STOP), RPC_TIMEOUT)

    async def restart_node(self, node_id: str, *, wipe: bool = False) -> None:
        """Returns once the old worker is gone (on_node_down is queued); on_node_up follows later."""
        node = self._node(node_id)
        async with node.lifecycle:
            await self._stop_worker(node)
            if wipe:
                await asyncio.to_thread(wipe_node_root, node.node_root)
            if self._nodes.get(node_id) is node and not self._closing:
                self._supervise(node)

    def is_up(self, node_id: str) -> bool:
        node = self._nodes.get(node_id)
        return node is not None and node.up

    def worker_pid(self, node_id: str) -> int | None:
        """Pid of the node's worker process (diagnostics and tests)."""
        node = self._nodes.get(node_id)
        return node.pid if node is not None and node.up else None

    async def lose(self, node_id: str) -> bool:
        pid = self.worker_pid(node_id)
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # its launcher kills its commands; the supervisor starts a new worker
        return True

    async def kill_processes(self, node_id: str, task_dir: str) -> int:
        node = self._node(node_id)
        root = os.path.join(node.node_root, task_dir)
        return len(await asyncio.to_thread(reaper.kill_node_processes, node.node_root, root))

    def _node(self, node_id: str) -> _Node:
        try:
            return self._nodes[node_id]
        except KeyError:
            raise NodeUnavailable(f"unknown node {node_id!r}") from None

    def _supervise(self, node: _Node) -> None:
        node.stopping = False
        node.wake = asyncio.Event()
        node.supervisor = asyncio.create_task(self._supervisor(node), name=f"kiln-supervise-{node.node_id}")

    async def _supervisor(self, node: _Node) -> None:
        """Keep one live nanny for the node: start it, and replace it if it gave up or its worker stays away."""
        loop = asyncio.get_running_loop()
        failures = 0
        while not node.stopping:
            nanny = node.nanny
            stuck = node.down_since is not None and loop.time() - node.down_since > DEATH_TIMEOUT
            if nanny is not None and nanny.status == Status.running and not stuck:
                await self._pause(node, SUPERVISE_INTERVAL)
                continue
            if nanny is not None:
                logger.warning(
                    "node %s: replacing its nanny (%s)",
                    node.node_id,
                    "worker did not come back" if stuck else f"nanny {nanny.status.name}",
                )
                node.nanny = None
                await self._close_nanny(node, nanny)
            if failures:
                await self._pause(node, min(FIRST_BACKOFF * 2 ** (failures - 1), MAX_BACKOFF))
            if node.stopping:
                break
            failures = 0 if await self._start_nanny(node) else failures + 1

    @staticmethod
    async def _pause(node: _Node, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(node.wake.wait(), seconds)

    async def _start_nanny(self, node: _Node) -> bool:
        """Start a nanny, which starts the worker; membership events do the rest. Never cancelled midway."""
        node.down_since = asyncio.get_running_loop().time()
        nanny = node.nanny = Nanny(
            self.scheduler_address,
            name=node.node_id,
            nthreads=1,
            host=self.host,
            dashboard=False,
            dashboard_address=f"{self.host}:0",
            memory_limit=0,
            death_timeout=DEATH_TIMEOUT,
            preload=[AGENT_MODULE],
            security=self._security,  # the nanny's worker gets it too
            local_directory=str(self.data_dir / "dask-scratch"),
            env={
                agent.NODE_ROOT_ENV: node.node_root,
                "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False",
                **DASK_ENV,
            },
            # Nanny merges this over the global config one level deep: pass whole subtrees.
            config=dask.config.merge(dask.config.config, WORKER_CONFIG),
        )
        try:
            await nanny
            return True
        except Exception as exc:
            logger.warning("node %s: worker failed to start: %r", node.node_id, exc)
            return False

    async def _close_nanny(self, node: _Node, nanny: Nanny) -> None:
        """Close a nanny and its worker (bounded); if that fails, SIGKILL the worker process we started."""
        pid = nanny.pid
        try:
            await asyncio.wait_for(nanny.close(timeout=NANNY_CLOSE_TIMEOUT), 3 * NANNY_CLOSE_TIMEOUT)
        except Exception:
            logger.exception("node %s: nanny did not close cleanly", node.node_id)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    async def _stop_worker(self, node: _Node) -> None:
        """Stop the supervisor, close the nanny and worker, then kill what its commands left behind."""
        node.stopping = True
        node.wake.set()
        if node.supervisor is not None:
            with contextlib.suppress(Exception):  # it finishes a nanny start in progress first
                await asyncio.wait_for(asyncio.shield(node.supervisor), DEATH_TIMEOUT + 4 * NANNY_CLOSE_TIMEOUT)
        nanny, node.nanny = node.nanny, None
        if nanny is not None:
            await self._close_nanny(node, nanny)
        if node.address is not None:  # the scheduler may not have noticed yet
            self._worker_removed(node.address)
        await asyncio.to_thread(reaper.kill_node_processes, node.node_root)

    # -- membership --------------------------------------------------------------------------

    def _worker_added(self, name: str, address: str) -> None:
        node = self._nodes.get(name)
        if node is None or self._closing:
            return  # not one of ours (a shared cluster), or shutting down
        if node.address is not None and node.address != address:
            self._worker_removed(node.address)
        node.address, node.up = address, False
        node.probe = asyncio.create_task(self._probe(node, address), name=f"kiln-probe-{name}")

    def _worker_removed(self, address: str) -> None:
        node = next((n for n in self._nodes.values() if n.address == address), None)
        if node is None:
            return
        node.address, node.up, node.pid, node.outbox = None, False, None, None  # its steps are lost with it
        node.down_since = asyncio.get_running_loop().time()
        self._stop_tasks(node)
        if not self._closing:
            node.events.put_nowait((DOWN, None, None))

    def _stop_tasks(self, node: _Node) -> None:
        if node.probe is not None:
            node.probe.cancel()
        node.pump_stop.set()

    async def _probe(self, node: _Node, address: str) -> None:
        """The node is up once its agent answers; then results start flowing."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PROBE_TIMEOUT
        while True:
            try:
                info = await asyncio.wait_for(self._rpc(address).kiln_ping(), RPC_TIMEOUT)
                break
            except Exception as exc:  # not listening yet, or no agent (its preload failed)
                if node.address != address or loop.time() > deadline:
                    logger.warning("node %s: agent at %s did not answer: %r", node.node_id, address, exc)
                    return
                await asyncio.sleep(0.05)
        if node.address != address or self._closing:
            return
        if info.get("profile"):
            logger.warning("node %s: the worker's sampling profiler is on", node.node_id)
        node.up, node.pid, node.down_since, node.outbox = True, info["pid"], None, None
        node.pump_stop = asyncio.Event()
        node.events.put_nowait((UP, None, None))
        node.pump = asyncio.create_task(self._pump(node, address, node.pump_stop), name=f"kiln-pump-{node.node_id}")

    # -- results -----------------------------------------------------------------------------

    async def _pump(self, node: _Node, address: str, stop: asyncio.Event) -> None:
        """Long-poll the agent; acknowledge each batch on the next call, once it has been delivered."""
        ack: list[str] = []
        ack_started: list[str] = []
        failures = 0
        while not stop.is_set():
            steps, node.outbox = node.outbox or [], None
            call = self._rpc(address).kiln_results(timeout=POLL_TIMEOUT, ack=ack, ack_started=ack_started, run=steps)
            try:
                messages = await _until(asyncio.wait_for(call, POLL_TIMEOUT + RPC_TIMEOUT), stop)
            except Exception as exc:  # OSError and timeouts mostly; never let the pump die
                if not stop.is_set():  # sent again with the next poll (the agent ignores ids it has)
                    node.outbox = steps
                failures += 1
                log = logger.info if isinstance(exc, (OSError, asyncio.TimeoutError)) else logger.error
                log("node %s: results poll failed (%d): %r", node.node_id, failures, exc)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), min(0.05 * 2**failures, 2.0))
                continue
            if messages is None or stop.is_set():
                return  # the worker is gone: its results would follow its on_node_down
            failures = 0
            ack = [m["step_id"] for m in messages if not m.get("running")]
            ack_started = [m["step_id"] for m in messages if m.get("running")]
            if messages:
                node.outbox = []
                await self._enqueue(node, RESULTS, [StepResult.from_message(m) for m in messages])

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
                elif kind == RESULTS:
                    await self.on_results(node.node_id, payload)
            except Exception:
                logger.exception("node %s: %s callback failed", node.node_id, kind)
            finally:
                if done is not None and not done.done():
                    done.set_result(None)

    # -- calls to the agent ------------------------------------------------------------------

    async def _call(self, node_id: str, op: str, timeout: float = RPC_TIMEOUT, **kwargs: Any) -> Any:
        node = self._node(node_id)
        address = node.address
        if not node.up or address is None:
            raise NodeUnavailable(f"node {node_id!r} is not up")
        try:
            return await asyncio.wait_for(getattr(self._rpc(address), op)(**kwargs), timeout)
        except (TimeoutError, OSError) as exc:
            raise NodeUnavailable(f"node {node_id!r} did not answer {op}: {exc!r}") from exc

    async def run(self, node_id: str, steps: list[Step]) -> None:
        """One message for the whole batch: the pump's next poll while it delivers results (one round
        trip per batch instead of two), else a call of its own. On NodeUnavailable the steps may or may
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

    async def _file_call(self, node_id: str, op: str, **kwargs: Any) -> Any:
        node = self._node(node_id)
        reply = await self._call(node_id, op, node_root=node.node_root, **kwargs)
        if "error" in reply:
            raise FILE_ERRORS.get(reply["error"], OSError)(reply["message"])
        return reply["ok"]

    async def list_files(self, node_id: str, path: str, recursive: bool) -> list[FileEntry]:
        entries = await self._file_call(node_id, "kiln_list_files", path=path, recursive=recursive)
        return [FileEntry(**e) for e in entries]

    async def stat_file(self, node_id: str, path: str) -> FileEntry:
        return FileEntry(**await self._file_call(node_id, "kiln_stat_file", path=path))

    async def read_file(self, node_id: str, path: str, start: int = 0, end: int | None = None) -> bytes:
        return await self._file_call(node_id, "kiln_read_file", path=path, start=start, end=end)

    async def delete_file(self, node_id: str, path: str, recursive: bool) -> None:
        await self._file_call(node_id, "kiln_delete_file", path=path, recursive=recursive)


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
