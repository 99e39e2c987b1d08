"""Hosts as Linux network namespaces, for tests and benchmarks of Kiln across machines on one machine.

`NetnsCluster(count, base)` makes `count` hosts: each a network namespace (`kiln-<id>-hN`) with loopback up and
one veth pair whose other end is on a bridge in the root namespace, the host at 10.<x>.<y>.N/24 and the bridge at
.254 (so the test process reaches every host, and nothing else does). `<id>` is random and the /24 one no
interface or route of this machine uses, so several test sessions (xdist workers) run side by side. Each host
has its own node-root directory under `base` (whose parents task accounts must pass through: o+x), runs commands
with `popen` (`ip netns exec`), loses and regains its network with `cut`/`restore` (its veth on the bridge down
and up), and can be killed whole (`kill`: every process in its namespace). `close()` removes all of it, on
failure too: every process in the namespaces (found by `ip netns pids`, killed by PID), the namespaces, their
links and the bridge.

PostgreSQL: the machine's cluster listens on localhost only (`listen_addresses`), which a namespace cannot reach,
and widening it means restarting a server other tests use. So `start_postgres(host)` runs a private
PostgreSQL 15 (initdb: ~2 s) inside a host, listening on that host's address only, with password
authentication for the cluster's subnet: Kiln's store is then reached over the hosts' network as on real
machines, not through the root namespace's socket, and nothing of the shared server is touched.

`kiln_on_hosts(netns)` puts Kiln on them (kiln.testing_cluster's processes): the Dask scheduler, that PostgreSQL
and `kiln serve --dask-scheduler` in host 1, a `kiln worker` in every other host, over TLS on the hosts'
addresses, with a short host lease (HOST_LEASE) so that a cut host is lost, and has stopped its tasks, in seconds.

Needs root and `ip netns` (iproute2); `unavailable()` says why not, and the `netns` fixture skips with that
reason unless KILN_TEST_REQUIRE_NETNS=1 (CI), which turns the skip into a failure.
"""

from __future__ import annotations

import ipaddress
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kiln.cli.embedded import EmbeddedServer, _stop_with_parent
from kiln.testing import wait_for
from kiln.testing_cluster import Cluster, HostSpec, start_cluster
from kiln.testing_fixtures import open_dir

REQUIRE_ENV = "KILN_TEST_REQUIRE_NETNS"
#: The bridge's host number in the cluster's /24 (hosts are 1..count).
BRIDGE_HOST = 254
#: A host stops its nodes' commands when its server has been silent this long (kiln.node's KILN_HOST_LEASE, 15 s
#: by default); the server declares a host lost after twice that: a cut host's nodes go unknown after 10 s here.
#: It must stay below the scheduler's own patience (Dask's distributed.comm.timeouts.tcp, 30 s), or the scheduler
#: could drop a cut host's worker, and the server requeue its tasks, before the host has stopped them.
HOST_LEASE = "5"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_PORT = 5432


def host_name(number: int) -> str:
    return f"host-{number}"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


def unavailable() -> str | None:
    """Why network-namespace hosts cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network-namespace hosts need root"
    if shutil.which("ip") is None:
        return "`ip` not found (apt-get install -y iproute2)"
    probe = f"kiln-probe-{uuid.uuid4().hex[:8]}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def _networks_in_use() -> list[ipaddress.IPv4Network]:
    """The networks of this machine's addresses and routes, which the cluster must not shadow."""
    lines = _ip("-4", "-o", "addr", "show").stdout.splitlines() + _ip("-4", "route", "show").stdout.splitlines()
    used = []
    for word in (w for line in lines for w in line.split()):
        try:
            used.append(ipaddress.IPv4Network(word, strict=False))
        except ValueError:
            continue  # not an address: "default", link names, keywords
    return used


def _free_subnet() -> ipaddress.IPv4Network:
    used = _networks_in_use()
    for _ in range(100):
        subnet = ipaddress.IPv4Network(f"10.{random.randint(200, 250)}.{random.randint(0, 255)}.0/24")
        if not any(subnet.overlaps(network) for network in used):
            return subnet
    raise RuntimeError("no free 10.x.y.0/24 for the network-namespace hosts")


@dataclass
class NetnsHost:
    """One host: its namespace, its address, its link on the bridge, and its own node-root directory."""

    namespace: str
    address: str
    link: str  #: the root-namespace end of its veth pair (on the bridge): cut and restore set it down and up
    node_root: Path

    @property
    def prefix(self) -> list[str]:
        """What runs a command inside this host: prefix + argv."""
        return ["ip", "netns", "exec", self.namespace]

    def pids(self) -> list[int]:
        listed = _ip("netns", "pids", self.namespace, check=False)
        return [int(pid) for pid in listed.stdout.split()]


@dataclass
class NetnsCluster:
    """`count` hosts on one bridge; a context manager whose exit removes everything it made."""

    count: int
    base: Path  #: where the hosts' node roots go; task accounts must pass through it (o+x)
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    hosts: list[NetnsHost] = field(default_factory=list)
    subnet: ipaddress.IPv4Network | None = None
    _undo: list[Callable[[], object]] = field(default_factory=list)
    _processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return f"kb{self.id}"

    @property
    def bridge_address(self) -> str:
        """The root namespace's address on the bridge: what the hosts see the test process as."""
        assert self.subnet is not None, "start() first"
        return str(self.subnet[BRIDGE_HOST])

    def host(self, name: str) -> NetnsHost:
        """The host named host-N."""
        return self.hosts[int(name.removeprefix("host-")) - 1]

    def start(self) -> NetnsCluster:
        try:
            self._make_bridge()
            for number in range(1, self.count + 1):
                self.hosts.append(self._make_host(number))
        except BaseException:
            self.close()
            raise
        return self

    def _make_bridge(self) -> None:
        self.subnet = _free_subnet()
        _ip("link", "add", self.bridge, "type", "bridge")
        self._undo.append(lambda: _ip("link", "del", self.bridge, check=False))
        _ip("addr", "add", f"{self.bridge_address}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def _make_host(self, number: int) -> NetnsHost:
        assert self.subnet is not None
        namespace, link, inner = f"kiln-{self.id}-h{number}", f"kv{self.id}h{number}", f"kp{self.id}h{number}"
        _ip("netns", "add", namespace)
        self._undo.append(lambda: _ip("netns", "del", namespace, check=False))
        _ip("link", "add", link, "type", "veth", "peer", "name", inner, "netns", namespace)
        self._undo.append(lambda: _ip("link", "del", link, check=False))
        _ip("link", "set", link, "master", self.bridge, "up")
        address = str(self.subnet[number])
        _ip("-n", namespace, "link", "set", inner, "name", "eth0")
        _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", namespace, "link", "set", "eth0", "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
        node_root = self.base / "hosts" / host_name(number)  # where kiln.testing_cluster puts a host's roots
        node_root.mkdir(parents=True, exist_ok=True)
        for directory in (node_root.parent, node_root):
            os.chmod(directory, 0o755)
        host = NetnsHost(namespace, address, link, node_root)
        self._undo.append(lambda: self.kill(host))  # undone first: a namespace outlives `ip netns del` while in use
        return host

    def popen(
        self, host: NetnsHost, argv: list[str], *, log: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start argv inside `host` (its own session; SIGTERM if the test process dies), output to `log`."""
        out = open(log, "ab") if log is not None else subprocess.DEVNULL
        try:
            process = subprocess.Popen(
                host.prefix + argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
                preexec_fn=_stop_with_parent,
            )
        finally:
            if log is not None:
                out.close()  # type: ignore[union-attr]
        self._processes.append(process)
        return process

    def run(self, host: NetnsHost, argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run argv inside `host` to its end."""
        return subprocess.run(host.prefix + argv, capture_output=True, text=True, timeout=timeout)

    def cut(self, host: NetnsHost) -> None:
        """Cut the host off the network, as a pulled cable: its processes live on, its peers hear nothing."""
        _ip("link", "set", host.link, "down")

    def restore(self, host: NetnsHost) -> None:
        """Plug the host back in. Addresses it failed to resolve while cut are forgotten, on its side and the
        bridge's, or its first packets after this would be dropped until the kernel tries again."""
        _ip("link", "set", host.link, "up")
        _ip("-n", host.namespace, "neigh", "flush", "all")
        _ip("neigh", "flush", "dev", self.bridge, "to", host.address)

    def kill(self, host: NetnsHost) -> None:
        """SIGKILL every process in the host's namespace (all of them ours), as a host that loses power."""
        while pids := host.pids():
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            wait_for(lambda: not set(pids) & set(host.pids()), 30, f"processes of {host.namespace} gone")
        for process in self._processes:
            process.poll()  # reap what was ours, so no zombie stays listed

    def start_postgres(self, host: NetnsHost, timeout: float = 60) -> str:
        """A private PostgreSQL in `host`, on its address only, password-protected; returns the database URL."""
        directory = self.base / f"postgres-{host.namespace}"
        directory.mkdir()
        shutil.chown(directory, "postgres")
        os.chmod(directory, 0o700)
        password = secrets.token_hex(16)
        (directory / "pwfile").write_text(password)
        shutil.chown(directory / "pwfile", "postgres")
        data = directory / "data"
        initdb = [str(PG_BIN / "initdb"), "-D", str(data), "-U", "kiln", "--pwfile", str(directory / "pwfile")]
        initdb += ["--auth-local", "peer", "--auth-host", "scram-sha-256", "--no-sync", "-E", "UTF8"]
        subprocess.run(["runuser", "-u", "postgres", "--", *initdb], capture_output=True, check=True, timeout=120)
        (data / "pg_hba.conf").write_text(f"local all postgres peer\nhost all kiln {self.subnet} scram-sha-256\n")
        settings = [f"listen_addresses={host.address}", f"unix_socket_directories={directory}", "fsync=off"]
        argv = ["runuser", "-u", "postgres", "--", str(PG_BIN / "postgres"), "-D", str(data), "-p", str(PG_PORT)]
        self.popen(host, argv + [arg for s in settings for arg in ("-c", s)], log=directory / "postgres.log")
        url = f"postgresql://kiln:{password}@{host.address}:{PG_PORT}/postgres"
        wait_listening(host.address, PG_PORT, timeout)
        return url

    def close(self) -> None:
        """Undo everything in reverse; a step that fails does not stop the others."""
        for process in self._processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
        while self._undo:
            try:
                self._undo.pop()()
            except Exception:  # teardown goes on: one leftover must not keep the others
                continue
        for process in self._processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> NetnsCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_listening(address: str, port: int, timeout: float = 60) -> None:
    """Poll until something accepts TCP connections on address:port."""

    def accepts() -> bool:
        try:
            with socket.create_connection((address, port), timeout=1):
                return True
        except OSError:
            return False

    wait_for(accepts, timeout, f"{address}:{port} listening")


def require() -> None:
    """Skip the calling test (or fail it under KILN_TEST_REQUIRE_NETNS=1) when hosts cannot be made here."""
    if (reason := unavailable()) is not None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{reason} ({REQUIRE_ENV}=1)")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def netns(open_base: Path) -> Iterator[NetnsCluster]:
    """Three hosts for the module's tests, their node roots in a directory task accounts pass through."""
    require()
    with NetnsCluster(3, open_dir(open_base, "netns-")) as cluster:
        yield cluster


@dataclass
class KilnOnHosts:
    """Kiln across namespace hosts: the Dask scheduler, PostgreSQL and `kiln serve` in host 1, a `kiln worker` in
    each other host (named host-N), all over TLS on the hosts' addresses."""

    netns: NetnsCluster
    cluster: Cluster
    server: EmbeddedServer
    database_url: str

    @property
    def names(self) -> list[str]:
        return list(self.cluster.hosts)

    def host_of(self, node_id: str) -> str:
        """The name of the host whose node-root directory holds the node's root."""
        return next(name for name, host in self.cluster.hosts.items() if (host.root_dir / node_id).is_dir())

    def serve(self, data_dir: Path, env: dict[str, str] | None = None) -> EmbeddedServer:
        """A `kiln serve` in host 1 on its address, attached to the cluster, its store the host's PostgreSQL."""
        first = self.netns.hosts[0]
        return self.cluster.server(
            data_dir, database_url=self.database_url, host=first.address, prefix=tuple(first.prefix), env=env or {}
        )

    def restart_server(self, *, crash: bool) -> None:
        self.server.kill() if crash else self.server.stop()
        self.server = self.serve(self.server.data_dir, self.server.env).start()
        self.cluster.wait_attached(self.server, self.names)


@contextmanager
def kiln_on_hosts(netns: NetnsCluster, server_env: dict[str, str] | None = None) -> Iterator[KilnOnHosts]:
    """Start it all (the server once every host has joined); stop it all on the way out."""
    first = netns.hosts[0]
    database_url = netns.start_postgres(first)
    specs = [HostSpec(host_name(n), host.address, tuple(host.prefix)) for n, host in enumerate(netns.hosts[1:], 2)]
    lease = {"KILN_HOST_LEASE": HOST_LEASE}
    with start_cluster(
        netns.base, specs, scheduler_prefix=first.prefix, scheduler_ip=first.address, env=lease
    ) as cluster:
        assert all(cluster.hosts[name].root_dir == netns.host(name).node_root for name in cluster.hosts)
        on_hosts = KilnOnHosts(netns, cluster, EmbeddedServer(netns.base), database_url)
        on_hosts.server = on_hosts.serve(netns.base / "kiln", server_env).start()
        try:
            cluster.wait_attached(on_hosts.server, on_hosts.names)
            yield on_hosts
        finally:
            on_hosts.server.stop()
