"""The ComputeBackend on an existing Dask cluster: `kiln serve --dask-scheduler ADDRESS`.

Kiln starts no scheduler and no worker here. The hosts are the cluster's workers that run Kiln's host agent
(`kiln worker`, or `dask worker --preload kiln.node`): the backend watches the scheduler's membership (its
`identity`, every MEMBERSHIP_INTERVAL), claims each new worker whose agent answers, and spreads nodes over the
hosts that have room. A worker that leaves takes its nodes down (they go `unknown`, their tasks are requeued);
one that comes back under the same name gets them back. Nodes wait for a host when none has room.

Everything else is the embedded default's (DaskBackend): rpc ops to the agents, never Dask tasks, so Dask
never retries or steals a step. The cluster's security is the operator's: Dask's TLS configuration
(`distributed.comm.tls.*`) or the files given; plain tcp:// only when asked for (insecure_dask), since any
process that reaches the cluster could then have its workers, which run as root, run anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import uuid
from collections.abc import Mapping
from pathlib import Path

from distributed.comm import get_address_host
from distributed.core import ConnectionPool
from distributed.security import Security

from kiln.compute.dask_backend import RPC_TIMEOUT, DaskBackend, _Host, _Node
from kiln.compute.protocol import AppPackage, Step
from kiln.node import LEASE

logger = logging.getLogger(__name__)

#: How often the backend reads the scheduler's workers.
MEMBERSHIP_INTERVAL = 0.5
#: How long a new worker's agent may take to answer the claim (a worker without Kiln's agent never does).
CLAIM_TIMEOUT = 10.0
#: The name of the waiting room of nodes no host has room for yet.
UNPLACED = "(no host yet)"
#: A host whose agent has not answered for this long is lost (its nodes go down, their tasks are requeued),
#: whether or not the scheduler still lists its worker (a cut network: the scheduler notices in minutes).
#: Twice the host's own lease (kiln.node.LEASE), after which it has already stopped those nodes' commands,
#: so that a task requeued elsewhere never runs twice at once.
HOST_TIMEOUT = 2 * LEASE
#: Bound of one liveness ping; how often a listed worker that is not up is asked again.
PING_TIMEOUT, REPROBE_INTERVAL = 2.0, 5.0


class ClusterRefused(ValueError):
    """Attaching as asked would be unsafe or cannot work; the message says what to pass instead."""


def cluster_security(
    address: str,
    *,
    ca_file: str | None = None,
    cert: str | None = None,
    key: str | None = None,
    insecure: bool = False,
) -> Security:
    """The comms' security towards the cluster: the files given, else Dask's configuration."""
    scheme = address.split("://", 1)[0] if "://" in address else "tcp"
    if scheme not in ("tcp", "tls"):
        raise ClusterRefused(f"--dask-scheduler {address}: Kiln attaches over tls:// or tcp://, not {scheme}://.")
    if scheme == "tcp":
        if not insecure:
            raise ClusterRefused(
                f"--dask-scheduler {address} is plain TCP: anything that can reach the cluster (a task on any "
                "node included) could have its workers, which run as root, run any code. Use tls:// with "
                "--tls-ca-file/--tls-cert/--tls-key (or Dask's distributed.comm.tls.* configuration), or pass "
                "--insecure-dask to accept this on a network only you use."
            )
        return Security()
    if ca_file or cert or key:
        if not (ca_file and cert and key):
            raise ClusterRefused("--tls-ca-file, --tls-cert and --tls-key go together: pass all three.")
        return Security(tls_ca_file=ca_file, tls_client_cert=cert, tls_client_key=key, require_encryption=True)
    security = Security()  # distributed.comm.tls.* of Dask's configuration
    configured = security.get_tls_config_for_role("client")
    if not (configured["ca_file"] and configured["cert"]):
        raise ClusterRefused(
            f"--dask-scheduler {address} is TLS, but no certificate is configured: pass --tls-ca-file, "
            "--tls-cert and --tls-key, or set distributed.comm.tls.ca-file and distributed.comm.tls.client.cert "
            "(and .key) in Dask's configuration."
        )
    return security


class ClusterBackend(DaskBackend):
    """DaskBackend on the workers of the cluster whose scheduler is at `address`."""

    node_files_here = False

    def __init__(self, data_dir: Path, address: str, security: Security) -> None:
        super().__init__(data_dir, hosts=0)
        self.address = address
        self.security = security
        #: names this server's claim on its hosts, so that its release at close stops no other server's nodes
        self._session = uuid.uuid4().hex
        self._unplaced = _Host(UNPLACED)
        self._limits: dict[str, int] = {}  #: nodes each host serves at most, by host name
        self._roots: dict[str, set[str]] = {}  #: ids of the node roots each host has, as it was claimed
        self._watcher: asyncio.Task[None] | None = None
        self._answered: dict[str, float] = {}  #: loop time each up host's agent last answered, by host name
        self._probed: dict[str, float] = {}  #: loop time each host was last probed, by host name
        #: each package's path on each host it was sent to, by (host name, path on the server)
        self._sent_packages: dict[tuple[str, str], asyncio.Future[str]] = {}

    def node_address(self, node_id: str) -> str | None:
        """The IP of the node's host (its worker's address); None for a host on loopback, this machine. Nodes on
        one host share its address, where each VM of Azure's has its own."""
        node = self._nodes.get(node_id)
        address = node.host.address if node is not None else None
        if address is None:
            return None
        ip = get_address_host(address)
        return None if ipaddress.ip_address(ip).is_loopback else ip

    @property
    def scheduler_address(self) -> str:
        return self.address

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._pool = await ConnectionPool(
            limit=256, timeout=RPC_TIMEOUT, connection_args=self.security.get_connection_args("client")
        )
        try:
            workers = await self._workers()
        except Exception as exc:
            raise ClusterRefused(f"the Dask scheduler at {self.address} did not answer: {exc!r}") from exc
        known = self._follow({}, workers)
        probes = [each.probe for each in self._hosts.values() if each.probe is not None]
        if probes:  # the hosts there now take the nodes the scheduler starts again, spread over them all
            await asyncio.wait(probes, timeout=CLAIM_TIMEOUT + RPC_TIMEOUT)
        self._watcher = asyncio.create_task(self._watch(known), name="kiln-cluster-membership")

    async def close(self) -> None:
        """Stop watching, then have every host stop this server's nodes (bounded), then as the embedded default."""
        if self._closing:
            return
        if self._watcher is not None:
            self._watcher.cancel()
        hosts = [each for each in self._hosts.values() if each.up and each.address is not None]
        for each in hosts:
            self._stop_tasks(each)  # no poll sees its nodes go and starts them again
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                asyncio.gather(
                    *(self._rpc(each.address).kiln_release(session=self._session) for each in hosts if each.address),
                    return_exceptions=True,
                ),
                RPC_TIMEOUT,
            )
        await super().close()

    # -- membership --------------------------------------------------------------------------

    async def _workers(self) -> dict[str, str]:
        """The scheduler's workers: name by address."""
        identity = await asyncio.wait_for(self._rpc(self.address).identity(), RPC_TIMEOUT)
        return {address: str(info["name"]) for address, info in identity["workers"].items()}

    async def _watch(self, known: dict[str, str]) -> None:
        while not self._closing:
            await asyncio.sleep(MEMBERSHIP_INTERVAL)
            try:
                workers = await self._workers()
            except Exception as exc:  # the scheduler is away: the hosts stay as they were until it answers
                logger.warning("the Dask scheduler at %s did not answer: %r", self.address, exc)
                continue
            known = self._follow(known, workers)
            await self._check_hosts(known)

    def _follow(self, known: dict[str, str], workers: dict[str, str]) -> dict[str, str]:
        for address in known.keys() - workers.keys():
            self._worker_removed(address)
        for address in workers.keys() - known.keys():
            self._worker_added(workers[address], address)
        return workers

    def _worker_added(self, name: str, address: str) -> None:
        if name not in self._hosts and not self._closing:
            self._hosts[name] = _Host(name)
        self._probed[name] = asyncio.get_running_loop().time()
        super()._worker_added(name, address)

    def _worker_removed(self, address: str) -> None:
        gone = next((each for each in self._hosts.values() if each.address == address), None)
        if gone is not None and gone.up and not self._closing:
            logger.warning("host %s at %s is gone: its %d nodes are down", gone.name, address, len(gone.nodes))
        super()._worker_removed(address)

    async def _check_hosts(self, workers: dict[str, str]) -> None:
        """Ping every up host: one silent for HOST_TIMEOUT is lost. Probe again, now and then, a listed worker
        whose host is not up (back from a cut, or slow to answer its first claim)."""
        loop = asyncio.get_running_loop()
        up = [(each, each.address) for each in self._hosts.values() if each.up and each.address is not None]
        pings = [asyncio.wait_for(self._rpc(address).kiln_ping(), PING_TIMEOUT) for _, address in up]
        for (each, address), reply in zip(up, await asyncio.gather(*pings, return_exceptions=True), strict=True):
            now = loop.time()
            if not isinstance(reply, BaseException):
                self._answered[each.name] = now
            elif now - self._answered.setdefault(each.name, now) > HOST_TIMEOUT and each.address == address:
                logger.warning(
                    "host %s: its agent has not answered for %.0f s; its nodes are lost", each.name, HOST_TIMEOUT
                )
                self._worker_removed(address)
        for address, name in workers.items():
            listed = self._hosts.get(name)
            idle = listed is not None and not listed.up and (listed.probe is None or listed.probe.done())
            idle = idle and name in self._limits  # a Kiln host once: not every worker of a shared cluster
            if idle and loop.time() - self._probed.get(name, 0.0) > REPROBE_INTERVAL:
                self._worker_added(name, address)

    async def _probe(self, each: _Host, address: str) -> None:
        """Claim the host first (the nodes an earlier server left there stop), then as the embedded default;
        once it is up, it takes nodes waiting for room."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLAIM_TIMEOUT
        while True:
            try:
                claimed = await asyncio.wait_for(self._rpc(address).kiln_claim(session=self._session), RPC_TIMEOUT)
                break
            except Exception as exc:  # not listening yet, or not a Kiln host (no kiln_claim)
                if each.address != address or loop.time() > deadline:
                    logger.warning("worker %s at %s is not a Kiln host (%r); it gets no nodes", each.name, address, exc)
                    return
                await asyncio.sleep(0.1)
        self._limits[each.name], self._roots[each.name] = int(claimed["limit"]), set(claimed["roots"])
        self._answered[each.name] = loop.time()
        logger.warning("host %s at %s: node roots under %s", each.name, address, claimed["root_dir"])
        await super()._probe(each, address)
        if each.up:
            self._place()

    # -- placement ---------------------------------------------------------------------------

    def _home(self, node_id: str) -> _Host:
        """The up host with room that has the node's root already (its files: a server that starts again puts
        its nodes back where they were), else the one with the fewest nodes; else the waiting room."""
        roomy = [each for each in self._hosts.values() if each.up and len(each.nodes) < self._limits.get(each.name, 0)]
        return min(
            roomy,
            key=lambda each: (node_id not in self._roots.get(each.name, ()), len(each.nodes)),
            default=self._unplaced,
        )

    def _place(self) -> None:
        """Nodes waiting for room go to the hosts that have it, and start there."""
        for node in list(self._unplaced.nodes.values()):
            home = self._home(node.node_id)
            if home is self._unplaced:
                return
            del self._unplaced.nodes[node.node_id]
            home.nodes[node.node_id], node.host = node, home
            if not node.stopping:
                self._start_node(node)

    async def run(self, node_id: str, steps: list[Step]) -> None:
        """The application packages the steps name are on the server's disk: each goes to the node's host once
        (kiln.node `put_package`) and the steps extract the host's copy."""
        node = self._node(node_id)
        if any(step.packages for step in steps) and node.host.address is not None:
            steps = [await self._with_host_packages(node.host, step) for step in steps]
        await super().run(node_id, steps)

    async def _with_host_packages(self, each: _Host, step: Step) -> Step:
        if not step.packages:
            return step
        packages = []
        for package in step.packages:
            key = (each.name, package.zip_path)
            if key not in self._sent_packages:
                self._sent_packages[key] = asyncio.ensure_future(self._send_package(each, package))
            try:
                packages.append(dataclasses.replace(package, zip_path=await self._sent_packages[key]))
            except Exception:
                del self._sent_packages[key]  # tried again with the next step; this one fails to extract it
                packages.append(package)
        return dataclasses.replace(step, packages=tuple(packages))

    async def _send_package(self, each: _Host, package: AppPackage) -> str:
        source = Path(package.zip_path)
        data = await asyncio.to_thread(source.read_bytes)
        name = f"{source.parent.name}_{source.stem}-{source.stat().st_mtime_ns}.zip"  # added again: a new file
        assert each.address is not None, "sent only to a host that is up"
        return str(await asyncio.wait_for(self._rpc(each.address).kiln_put_package(name=name, data=data), 300))

    async def measure_usage(self, roots: Mapping[str, str]) -> dict[str, dict[str, float]]:
        """Each host measures its own nodes; a node whose host does not answer has no measurement."""
        by_host: dict[str, list[str]] = {}
        for node_id in roots:
            node = self._nodes.get(node_id)
            if node is not None and node.up and node.host.address is not None:
                by_host.setdefault(node.host.address, []).append(node_id)
        replies = await asyncio.gather(
            *(
                asyncio.wait_for(self._rpc(address).kiln_usage(node_ids=node_ids), RPC_TIMEOUT)
                for address, node_ids in by_host.items()
            ),
            return_exceptions=True,
        )
        return {node_id: usage for reply in replies if isinstance(reply, dict) for node_id, usage in reply.items()}

    async def _wipe(self, node: _Node) -> None:
        """The node's root lives on its host: the host empties it."""
        address = node.host.address
        if not node.host.up or address is None:
            logger.warning("node %s: its host is away, its root is not wiped", node.node_id)
            return
        await asyncio.wait_for(self._rpc(address).kiln_node_wipe(node_root=node.node_root), RPC_TIMEOUT)
