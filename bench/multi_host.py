"""Kiln across three network-namespace hosts against Kiln on one host, in the same run, driven by the azure-batch SDK.

Needs root and `ip netns` (kiln.testing_netns). "hosts": the Dask scheduler, PostgreSQL and `kiln serve
--dask-scheduler` in host 1, a `kiln worker` in hosts 2 and 3 (TLS on the hosts' addresses). "one host": the
embedded default (`kiln serve`, its own scheduler and host agent) in the root namespace, its store a database of
its own on the same PostgreSQL, so that the two differ in where the nodes run, not in the store.

* throughput: a pool of 2 nodes x 4 slots on each (on "hosts" one node per worker host), one job of --tasks
  `/bin/true` tasks added in collections of 100; tasks/s from the first task's creation to the last one's end
  (both the server's clock). The two alternate, ABBA, --rounds times (this machine's speed drifts).
* a pool of --nodes nodes (1 slot) on each, one after the other: seconds until steady with every node idle; RSS
  of everything (hosts: every process in the three namespaces but PostgreSQL, i.e. scheduler, server, workers,
  launchers; one host: the server's process tree) at its peak while starting and at idle; dispatch p50/p95 (a
  task's start minus its creation) of 2 `/bin/true` tasks per node.

    python bench/multi_host.py [--tasks 2000] [--rounds 2] [--nodes 100]

Prints figures; asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import psutil
import psycopg
from azure.batch import BatchClient, models

from kiln.cli.embedded import EmbeddedServer
from kiln.testing import create_pool_and_wait, make_client, pool_options, terminate_job, unique, wait_task_counts
from kiln.testing_netns import NetnsCluster, kiln_on_hosts, unavailable
from nodes import MB, Sampler, dispatch, tree_rss, wait_idle  # bench/nodes.py: the 100-node figures, same way

COLLECTION = 100


def throughput(client: BatchClient, pool_id: str, tasks: int) -> float:
    """Tasks per second of one job of `tasks` /bin/true, first creation to last end (the server's clock)."""
    job_id = unique("tp")
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id)))
    for first in range(0, tasks, COLLECTION):
        specs = [
            models.BatchTaskCreateOptions(id=f"t{i:06d}", command_line="/bin/true")
            for i in range(first, min(first + COLLECTION, tasks))
        ]
        client.create_task_collection(job_id, models.BatchTaskGroup(task_values=specs))
    wait_task_counts(client, job_id, tasks, timeout=600, poll=0.5)
    done = list(client.list_tasks(job_id))
    assert all(t.execution_info.exit_code == 0 for t in done), "a /bin/true failed"
    began = min(t.creation_time for t in done)
    ended = max(t.execution_info.end_time for t in done)
    terminate_job(client, job_id)
    return tasks / (ended - began).total_seconds()


def hosts_rss(netns: NetnsCluster) -> int:
    """Bytes resident in every process of the namespace hosts but PostgreSQL's."""
    total = 0
    for pid in (pid for host in netns.hosts for pid in host.pids()):
        try:
            process = psutil.Process(pid)
            if process.name() != "postgres":
                total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


class HostsSampler(Sampler):
    """The peak of hosts_rss, sampled on a thread."""

    def __init__(self, netns: NetnsCluster) -> None:
        super().__init__(0)
        self.netns = netns

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, hosts_rss(self.netns))
            self._stop.wait(0.2)


def big_pool(client: BatchClient, nodes: int, sampler: Sampler, rss: Callable[[], int]) -> str:
    """Figures of a pool of `nodes` nodes: idle s, RSS peak and at idle, dispatch p50/p95."""
    pool_id = f"bench-{nodes}"
    with sampler:
        client.create_pool(pool_options(pool_id, target_dedicated_nodes=nodes, task_slots_per_node=1))
        idle, states = wait_idle(client, pool_id, nodes, timeout=300)
    if idle is None:
        return f"never idle ({states}); RSS peak {sampler.peak / MB:.0f} MB"
    at_idle = rss()
    p50, p95, _ = dispatch(client, pool_id, 2 * nodes)
    client.begin_delete_pool(pool_id, polling_interval=1).result()
    return (
        f"idle in {idle:5.1f} s, RSS peak {sampler.peak / MB:5.0f} MB, at idle {at_idle / MB:5.0f} MB, "
        f"dispatch p50 {p50:4.0f} ms p95 {p95:4.0f} ms"
    )


def one_host_database(url: str) -> str:
    """A database of its own for the one-host server, on the hosts' PostgreSQL."""
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("CREATE DATABASE onehost")
    return url.rsplit("/", 1)[0] + "/onehost"


def compare(
    netns: NetnsCluster, server: EmbeddedServer, alone: EmbeddedServer, tasks: int, rounds: int, nodes: int
) -> None:
    """The throughput rounds (ABBA), then the big pools, on the hosts' server and the one-host server."""
    clients = {"hosts": make_client(server), "one host": make_client(alone)}
    pools = {name: create_pool_and_wait(client, nodes=2, slots=4) for name, client in clients.items()}
    rates: dict[str, list[float]] = {name: [] for name in clients}
    for _ in range(rounds):
        for name in [*clients, *reversed(clients)]:
            rates[name].append(throughput(clients[name], pools[name], tasks))
            print(f"  {name:9} {rates[name][-1]:7.1f} tasks/s", flush=True)
    for name, client in clients.items():
        client.begin_delete_pool(pools[name], polling_interval=1).result()
    median = {name: statistics.median(values) for name, values in rates.items()}
    print(f"throughput, {tasks} x /bin/true on 2 nodes x 4 slots (medians of {2 * rounds} runs each):")
    print(f"  3 hosts  {median['hosts']:7.1f} tasks/s   one host {median['one host']:7.1f} tasks/s", end="")
    print(f"   ratio {median['hosts'] / median['one host']:.2f}")
    print(f"pool of {nodes} nodes:")
    print(f"  3 hosts  {big_pool(clients['hosts'], nodes, HostsSampler(netns), lambda: hosts_rss(netns))}", flush=True)
    assert alone.process is not None
    pid = alone.process.pid
    print(f"  one host {big_pool(clients['one host'], nodes, Sampler(pid), lambda: tree_rss(pid))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2, help="ABBA rounds of the throughput runs")
    parser.add_argument("--nodes", type=int, default=100)
    args = parser.parse_args()
    if (reason := unavailable()) is not None:
        raise SystemExit(f"bench/multi_host.py: {reason}")
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)  # task accounts pass through it
        with NetnsCluster(3, Path(tmp)) as netns, kiln_on_hosts(netns) as hosts:
            database = one_host_database(hosts.database_url)
            with EmbeddedServer(Path(tmp) / "one-host", database_url=database) as alone:
                compare(netns, hosts.server, alone, args.tasks, args.rounds, args.nodes)


if __name__ == "__main__":
    main()
