"""A restarted server answers before its own Dask cluster runs (server.local_cluster, compute/late.py): reads
and task adds are served while the nodes are still starting, and a task added then runs once they are up.

The server runs in this process, so that the start of its cluster can be held until the test lets it go:
"the nodes are still starting" is a fact the test controls, not a matter of timing."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from azure.batch import models
from tests.e2e.test_failed_commits import InProcessServer

from kiln.cli.embedded import EmbeddedServer
from kiln.compute.dask_backend import DaskBackend
from kiln.testing import create_pool_and_wait, make_client, wait_for, wait_tasks_completed

JOB = "early"
#: what `kiln serve` does before its lifespan starts, in a fresh interpreter: which heavy packages it imported
BUILD_AND_REPORT = """
import sys
from pathlib import Path
import kiln.cli.main
from kiln.server import Settings, build_app
build_app(Settings(data_dir=Path(sys.argv[1])))
print(sorted(name for name in ("distributed", "httpx") if name in sys.modules))
"""


def test_the_app_is_built_without_dask_or_httpx(open_tmp: Path) -> None:
    """Dask's distributed is imported beside the opening port, httpx only by clients (api/client_auth.py)."""
    done = subprocess.run(
        [sys.executable, "-c", BUILD_AND_REPORT, str(open_tmp / "data")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.strip() == "[]"


def test_port_answers_while_the_nodes_start_and_a_task_added_then_runs(
    open_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = open_tmp / "data"
    with EmbeddedServer(data) as first:
        client = make_client(first)
        pool_id = create_pool_and_wait(client, nodes=1)
        client.create_job(models.BatchJobCreateOptions(id=JOB, pool_info=models.BatchPoolInfo(pool_id=pool_id)))
    gate = threading.Event()
    start = DaskBackend.start

    async def held(backend: DaskBackend) -> None:
        await asyncio.to_thread(gate.wait)
        await start(backend)

    monkeypatch.setattr(DaskBackend, "start", held)
    with InProcessServer(data) as server:
        try:
            client = server.client()
            assert client.get_job(JOB).state == models.BatchJobState.ACTIVE
            (node,) = client.list_nodes(pool_id)
            assert node.state == models.BatchNodeState.STARTING
            client.create_task(JOB, models.BatchTaskCreateOptions(id="t", command_line="/bin/sh -c 'exit 3'"))
            assert client.get_task(JOB, "t").state == models.BatchTaskState.ACTIVE
            assert not server.control.backend.is_up(node.id)
        finally:
            gate.set()
        (task,) = wait_tasks_completed(client, JOB)
        assert (task.execution_info.exit_code, task.execution_info.retry_count) == (3, 0)
        wait_for(lambda: client.get_node(pool_id, node.id).state == models.BatchNodeState.IDLE, what="the node idle")
