"""The network-namespace hosts of the multi-host tests (kiln.testing_netns), on a plain Dask cluster: a scheduler
in one host and a worker in each other, joined over the hosts' own addresses; a cut host drops out and comes back
when restored; a killed host leaves nothing running; the cluster's teardown leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import Client

from kiln.testing import wait_for
from kiln.testing_netns import NetnsCluster, NetnsHost, require, wait_listening

SCHEDULER_PORT = 8786
#: The scheduler drops a worker it has not heard from for this long: a cut host's worker.
DASK_ENV = {"DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL": "3s", "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False"}


def start_worker(netns: NetnsCluster, host: NetnsHost, scheduler: str) -> subprocess.Popen[bytes]:
    argv = ["dask", "worker", scheduler, "--host", host.address, "--name", host.namespace, "--no-nanny"]
    return netns.popen(host, argv + ["--nthreads", "1"], log=host.node_root / "worker.log", env=DASK_ENV)


@pytest.fixture(scope="module")
def dask_cluster(netns: NetnsCluster) -> Iterator[tuple[str, Client]]:
    """`dask scheduler` in host 1, a `dask worker` in hosts 2 and 3; a client in the root namespace."""
    first = netns.hosts[0]
    argv = ["dask", "scheduler", "--host", first.address, "--port", str(SCHEDULER_PORT), "--no-dashboard"]
    netns.popen(first, argv, log=first.node_root / "scheduler.log", env=DASK_ENV)
    wait_listening(first.address, SCHEDULER_PORT)
    scheduler = f"tcp://{first.address}:{SCHEDULER_PORT}"
    for host in netns.hosts[1:]:
        start_worker(netns, host, scheduler)
    with Client(scheduler, timeout=30) as client:
        wait_for(lambda: len(workers(client)) == 2, 60, "both workers joined")
        yield scheduler, client


def workers(client: Client) -> dict[str, str]:
    """Worker name → its host's address, as the scheduler sees them."""
    return {w["name"]: w["host"] for w in client.scheduler_info()["workers"].values()}


def test_hosts_join_over_their_own_addresses(netns: NetnsCluster, dask_cluster) -> None:
    _, client = dask_cluster
    assert workers(client) == {host.namespace: host.address for host in netns.hosts[1:]}
    # each host sees only its own address (and loopback), and has a node root of its own
    for host in netns.hosts:
        seen = netns.run(host, ["ip", "-4", "-o", "addr", "show"]).stdout
        assert host.address in seen and all(other.address not in seen for other in netns.hosts if other != host)
    assert len({host.node_root for host in netns.hosts}) == 3
    assert all(host.node_root.stat().st_mode & 0o005 == 0o005 for host in netns.hosts)


def test_a_cut_host_drops_out_and_rejoins_when_restored(netns: NetnsCluster, dask_cluster) -> None:
    scheduler, client = dask_cluster
    second = netns.hosts[1]
    netns.cut(second)
    try:
        wait_for(lambda: second.namespace not in workers(client), 60, "the cut host's worker dropped")
        assert netns.hosts[2].namespace in workers(client)
    finally:
        netns.restore(second)
    # The dropped worker either registers again or, told at its next heartbeat that it is unknown, closes
    # itself; then a host's supervisor (a nanny, or `kiln worker`'s) starts it again. Here the test does.
    wait_for(lambda: second.namespace in workers(client) or not _worker_running(second), 60, "back or closed")
    if second.namespace not in workers(client):
        start_worker(netns, second, scheduler)
    wait_for(lambda: workers(client).get(second.namespace) == second.address, 60, "the host rejoined")


def test_a_killed_host_leaves_nothing_running(netns: NetnsCluster, dask_cluster) -> None:
    scheduler, client = dask_cluster
    third = netns.hosts[2]
    assert third.pids()
    netns.kill(third)
    assert third.pids() == []
    wait_for(lambda: third.namespace not in workers(client), 60, "the killed host's worker dropped")
    start_worker(netns, third, scheduler)
    wait_for(lambda: third.namespace in workers(client), 60, "the host rejoined after its restart")


def _worker_running(host: NetnsHost) -> bool:
    def is_worker(pid: int) -> bool:
        try:
            return b"worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            return False

    return any(is_worker(pid) for pid in host.pids())


def test_teardown_removes_namespaces_links_and_processes(open_tmp: Path) -> None:
    require()
    with NetnsCluster(2, open_tmp) as cluster:
        host = cluster.hosts[0]
        sleeper = cluster.popen(host, [sys.executable, "-c", "import time; time.sleep(600)"])
        names = [h.namespace for h in cluster.hosts]
        links = [cluster.bridge, *(h.link for h in cluster.hosts)]
        wait_for(lambda: host.pids(), 30, "the sleeper in the namespace")
    assert sleeper.poll() is not None
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert not [name for name in names if name in listed]
    shown = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    assert not [link for link in links if f" {link}:" in shown or f" {link}@" in shown]


def test_postgres_in_a_host_is_reached_over_the_hosts_addresses_only(netns: NetnsCluster) -> None:
    first, second = netns.hosts[0], netns.hosts[1]
    url = netns.start_postgres(first)
    assert f"@{first.address}:" in url
    query = f"import psycopg; print(psycopg.connect({url!r}, connect_timeout=3).execute('select 42').fetchone()[0])"
    assert netns.run(second, [sys.executable, "-c", query]).stdout.strip() == "42"
    # not on the host's loopback, nor without the password
    on_loopback = url.replace(first.address, "127.0.0.1")
    assert "failed" in netns.run(first, [sys.executable, "-c", query.replace(url, on_loopback)]).stderr
    no_password = url.split(":")[0] + "://kiln@" + url.split("@")[1]
    assert "password" in netns.run(second, [sys.executable, "-c", query.replace(url, no_password)]).stderr
