"""Pools and nodes through the SDK."""

from __future__ import annotations

import pytest
from azure.batch import models
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

from kiln.testing import UBUNTU, create_pool_and_wait, shell, unique, wait_for, wait_tasks_completed


def test_pool_create_get_list_exists(client, pool):
    got = client.get_pool(pool)
    assert got.id == pool
    assert got.state == "active"
    assert got.allocation_state == "steady"
    assert got.current_dedicated_nodes == 2
    assert got.target_dedicated_nodes == 2
    assert got.task_slots_per_node == 2
    assert got.task_scheduling_policy.node_fill_type == "Spread"  # as Batch answers it
    assert got.etag and got.last_modified
    assert pool in [p.id for p in client.list_pools()]
    assert client.pool_exists(pool) is True


def test_nodes_are_listed_idle_and_gettable(client, pool):
    nodes = list(client.list_nodes(pool))
    assert len(nodes) == 2
    assert {n.state for n in nodes} <= {"idle", "running"}
    node = client.get_node(pool, nodes[0].id)
    assert node.id == nodes[0].id
    assert node.scheduling_state == "enabled"
    assert node.affinity_id == f"TVM:{node.id}"


def test_duplicate_pool_is_409_pool_exists(client, pool):
    with pytest.raises(ResourceExistsError) as caught:
        client.create_pool(
            models.BatchPoolCreateOptions(
                id=pool.upper(),
                vm_size="standard_d2s_v3",
                target_dedicated_nodes=1,
                virtual_machine_configuration=UBUNTU,
            )
        )
    assert caught.value.error.code == "PoolExists"


def test_unknown_pool_and_node_are_404(client, pool):
    with pytest.raises(ResourceNotFoundError) as caught:
        client.get_pool("no-such-pool")
    assert caught.value.error.code == "PoolNotFound"
    with pytest.raises(ResourceNotFoundError) as caught:
        client.get_node(pool, "no-such-node")
    assert caught.value.error.code == "NodeNotFound"


def test_invalid_pool_id_is_400_naming_the_property(client):
    with pytest.raises(HttpResponseError) as caught:
        client.create_pool(
            models.BatchPoolCreateOptions(
                id="bad id!", vm_size="standard_d2s_v3", target_dedicated_nodes=1, virtual_machine_configuration=UBUNTU
            )
        )
    assert caught.value.status_code == 400
    assert caught.value.error.code == "InvalidPropertyValue"
    assert any(d.code == "PropertyName" and d.message == "id" for d in caught.value.error.details)


def test_resize_grows_and_shrinks_then_delete(client):
    pool_id = create_pool_and_wait(client, nodes=1)
    client.begin_resize_pool(
        pool_id, models.BatchPoolResizeOptions(target_dedicated_nodes=2), polling_interval=1
    ).result()
    wait_for(lambda: len([n for n in client.list_nodes(pool_id) if n.state == "idle"]) == 2, 60, "2 idle nodes")
    assert client.get_pool(pool_id).current_dedicated_nodes == 2
    client.begin_resize_pool(
        pool_id, models.BatchPoolResizeOptions(target_dedicated_nodes=1), polling_interval=1
    ).result()
    wait_for(lambda: len(list(client.list_nodes(pool_id))) == 1, 60, "1 node")
    client.begin_delete_pool(pool_id, polling_interval=1).result()
    with pytest.raises(ResourceNotFoundError):
        client.get_pool(pool_id)


def test_task_slots_per_node_are_honoured(client):
    """1 node x 3 slots: never more than 3 tasks overlap; all 6 run there."""
    pool_id = create_pool_and_wait(client, nodes=1, slots=3)
    job_id = unique("slots")
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id)))
    client.create_tasks(
        job_id, [models.BatchTaskCreateOptions(id=f"t{i}", command_line=shell("sleep 0.5")) for i in range(6)]
    )
    tasks = wait_tasks_completed(client, job_id)
    spans = [(t.execution_info.start_time, t.execution_info.end_time) for t in tasks]
    most = max(sum(1 for s, e in spans if s <= moment < e) for moment, _ in spans)
    assert most == 3
    client.begin_delete_job(job_id, polling_interval=1).result()
    client.begin_delete_pool(pool_id, polling_interval=1).result()
