"""Light nodes (issue 19.4) through the azure-batch SDK: nodes beyond what a host holds fail visibly; and a pool of
100 nodes on this small box reaches idle and runs 100 tasks at once, one on each node (each task waits, bounded,
until every other has started, so the 100 must run together: with one slot per node, that is one per node).

The 100-node test is not part of the suite's default run: on this 2-core box it takes 60-100 s with its setup
and teardown (mostly each node's first task starting its launcher process). Run it with KILN_TEST_SCALE=1."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from azure.batch import models

from kiln.cli.embedded import EmbeddedServer
from kiln.compute.node.host import MAX_NODES_ENV
from kiln.core.node import NODE_START_FAILED
from kiln.testing import create_pool_and_wait, make_client, pool_options, shell, wait_for, wait_tasks_completed

NODES = 100


def test_nodes_beyond_what_the_host_holds_fail_visibly_and_once(open_tmp: Path) -> None:
    with EmbeddedServer(open_tmp / "data", env={MAX_NODES_ENV: "3"}) as server:
        client = make_client(server)
        client.create_pool(pool_options("over", target_dedicated_nodes=5, task_slots_per_node=1))
        wait_for(lambda: client.get_pool("over").allocation_state == "steady", 120, "the resize to end")
        nodes = list(client.list_nodes("over"))
        assert sorted(n.state for n in nodes) == ["idle"] * 3 + ["unusable"] * 2
        for node in (n for n in nodes if n.state == "unusable"):
            (error,) = node.errors
            assert error.code == NODE_START_FAILED and MAX_NODES_ENV in error.message
        assert "replacing" not in (open_tmp / "data" / "server.log").read_text()  # nothing retried it
        failed = [n.id for n in nodes if n.state == "unusable"]
        client.begin_remove_nodes("over", models.BatchNodeRemoveOptions(node_ids=failed), polling_interval=1).result()
        wait_for(lambda: client.get_pool("over").allocation_state == "steady", 60, "the removal to end")
        assert sorted(n.state for n in client.list_nodes("over")) == ["idle"] * 3


@pytest.mark.skipif(not os.environ.get("KILN_TEST_SCALE"), reason="a scale test: KILN_TEST_SCALE=1")
def test_a_pool_of_100_nodes_runs_100_tasks_one_per_node(client, cleanup, marks_dir: Path) -> None:
    pool_id = create_pool_and_wait(client, nodes=NODES, slots=1)
    cleanup(pool=pool_id)
    job_id = f"job-{pool_id}"
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id)))
    cleanup(job=job_id)
    barrier = (
        f"touch {marks_dir}/$AZ_BATCH_TASK_ID; "
        f"for i in $(seq 300); do [ $(ls {marks_dir} | wc -l) -ge {NODES} ] && exit 0; sleep 1; done; exit 1"
    )
    tasks = [models.BatchTaskCreateOptions(id=f"t{i:03d}", command_line=shell(barrier)) for i in range(NODES)]
    client.create_task_collection(job_id, models.BatchTaskGroup(task_values=tasks))
    done = wait_tasks_completed(client, job_id, timeout=300)
    assert [t.execution_info.exit_code for t in done] == [0] * NODES
    assert len({t.node_info.node_id for t in done}) == NODES
    nodes = list(client.list_nodes(pool_id))
    assert len(nodes) == NODES and all(n.total_tasks_run == 1 for n in nodes)
