"""A real ClusterBackend on a real cluster (a `dask scheduler` and a `kiln worker` process, over TLS): a node
waits for a host, then lives there; its files, its reimage and its usage are the host's, not the server's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kiln.compute.cluster_backend import ClusterBackend, cluster_security
from kiln.compute.protocol import Step
from kiln.testing_cluster import Cluster, start_cluster

from .helpers import eventually


@pytest.fixture
async def cluster(open_tmp: Path) -> AsyncIterator[Cluster]:
    running = await asyncio.to_thread(start_cluster, open_tmp / "cluster", ["host-1"])
    yield running
    await asyncio.to_thread(running.stop)


async def test_a_node_lives_on_its_host(cluster: Cluster, open_tmp: Path) -> None:
    assert cluster.tls is not None
    tls = cluster.tls
    security = cluster_security(cluster.address, ca_file=str(tls.ca), cert=str(tls.cert), key=str(tls.key))
    backend = ClusterBackend(open_tmp / "kiln", cluster.address, security)
    server_root = open_tmp / "kiln" / "nodes" / "n1"  # what the scheduler names: never made on this disk
    await backend.start()
    try:
        await backend.add_node("n1", str(server_root))  # the worker may not have joined yet: the node waits
        await eventually(lambda: backend.is_up("n1"), 60, "n1 up on its host")
        host_root = cluster.hosts["host-1"].root_dir / "n1"
        script = "echo $AZ_BATCH_NODE_ROOT_DIR; echo kept > $AZ_BATCH_NODE_SHARED_DIR/kept; exec sleep 60"
        await backend.run("n1", [Step("s1", "task", str(server_root), "workitems/j/job-1/s1", f"sh -c '{script}'")])
        stdout = "workitems/j/job-1/s1/stdout.txt"
        await eventually(lambda: (host_root / "shared" / "kept").exists(), 30, "the command to run")
        assert await backend.read_file("n1", stdout) == f"{host_root}\n".encode()
        usage = await backend.measure_usage({"n1": str(server_root)})
        assert usage["n1"]["$MemoryBytes"] > 0 and usage["n1"]["$DiskBytes"] > 0  # the sleep and the files
        await backend.restart_node("n1", wipe=True)  # reimage: the host empties the node's root
        assert not (host_root / "shared" / "kept").exists() and (host_root / "workitems").is_dir()
        await eventually(lambda: backend.is_up("n1"), 30, "n1 up again")
        assert not server_root.exists()
    finally:
        await backend.close()
