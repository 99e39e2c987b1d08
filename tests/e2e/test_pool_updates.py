"""Pool PATCH (every field Batch lets change, some only on an empty pool), updateproperties (a replace), and
`$expand=stats` refused, through the SDK."""

from __future__ import annotations

import pytest
from azure.batch import models
from azure.core.exceptions import HttpResponseError, ResourceExistsError

from kiln.testing import UBUNTU, create_pool_and_wait, unique, wait_for, wait_tasks_completed

NOBLE = models.VirtualMachineConfiguration(
    image_reference=models.BatchVmImageReference(publisher="canonical", offer="ubuntu-24_04-lts", sku="server"),
    node_agent_sku_id="batch.node.ubuntu 24.04",
)


def _empty_pool(client, cleanup) -> str:
    pool_id = create_pool_and_wait(client, nodes=0)
    cleanup(pool=pool_id)
    return pool_id


def _details(error: HttpResponseError) -> dict[str, str]:
    return {d.code: d.message for d in error.error.details or ()}


def test_an_empty_pool_takes_every_patchable_field_and_new_nodes_use_them(client, cleanup):
    pool_id = _empty_pool(client, cleanup)
    client.update_pool(
        pool_id,
        models.BatchPoolUpdateOptions(
            display_name="patched",
            vm_size="standard_d4s_v3",
            task_slots_per_node=2,
            task_scheduling_policy=models.BatchTaskSchedulingPolicy(node_fill_type="Pack"),
            virtual_machine_configuration=NOBLE,
            user_accounts=[models.UserAccount(name="worker", password="secret")],
            metadata=[models.BatchMetadataItem(name="k", value="v")],
            start_task=models.BatchStartTask(command_line="/bin/true"),
            enable_inter_node_communication=True,
        ),
    )
    pool = client.get_pool(pool_id)
    assert (pool.display_name, pool.vm_size, pool.task_slots_per_node) == ("patched", "standard_d4s_v3", 2)
    assert pool.task_scheduling_policy.node_fill_type == "pack"
    assert pool.virtual_machine_configuration.image_reference.offer == "ubuntu-24_04-lts"
    assert pool.virtual_machine_configuration.image_reference.version == "latest"
    assert [a.name for a in pool.user_accounts] == ["worker"] and pool.user_accounts[0].password is None
    assert [(m.name, m.value) for m in pool.metadata] == [("k", "v")]
    assert pool.start_task.command_line == "/bin/true" and pool.enable_inter_node_communication is True
    # the scheduler took the new slots: a task needing 2 slots runs on the pool's new node
    client.begin_resize_pool(
        pool_id, models.BatchPoolResizeOptions(target_dedicated_nodes=1), polling_interval=1
    ).result()
    wait_for(lambda: [n.state for n in client.list_nodes(pool_id)] == ["idle"], 120, "the new node")
    job_id = unique("twoslots")
    cleanup(job=job_id)
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id)))
    client.create_task(job_id, models.BatchTaskCreateOptions(id="t", command_line="/bin/true", required_slots=2))
    (task,) = wait_tasks_completed(client, job_id)
    assert task.execution_info.exit_code == 0


def test_fields_for_an_empty_pool_only_are_409_while_it_has_nodes_and_the_rest_still_change(client, pool):
    before = client.get_pool(pool)
    with pytest.raises(ResourceExistsError) as caught:
        client.update_pool(pool, models.BatchPoolUpdateOptions(vm_size="standard_d8s_v3"))
    assert caught.value.status_code == 409
    assert _details(caught.value)["PropertyName"] == "vmSize"
    assert client.get_pool(pool).vm_size == before.vm_size
    client.update_pool(pool, models.BatchPoolUpdateOptions(metadata=[models.BatchMetadataItem(name="m", value="1")]))
    assert [(m.name, m.value) for m in client.get_pool(pool).metadata] == [("m", "1")]
    client.update_pool(pool, models.BatchPoolUpdateOptions(metadata=[]))
    assert not client.get_pool(pool).metadata


@pytest.mark.parametrize(
    ("body", "prop"),
    [
        ({"targetDedicatedNodes": 3}, "targetDedicatedNodes"),
        (
            {"mountConfiguration": [{"nfsMountConfiguration": {"source": "s", "relativeMountPath": "m"}}]},
            "mountConfiguration",
        ),
        ({"taskSlotsPerNode": 0}, "taskSlotsPerNode"),
        (
            {"virtualMachineConfiguration": {**UBUNTU.as_dict(), "nodeAgentSKUId": "batch.node.ubuntu 18.04"}},
            "virtualMachineConfiguration.nodeAgentSKUId",
        ),
    ],
    ids=["not-patchable", "mount", "slots", "wrong-agent"],
)
def test_a_patch_kiln_cannot_honour_is_400_naming_the_property(client, cleanup, body, prop):
    pool_id = _empty_pool(client, cleanup)
    with pytest.raises(HttpResponseError) as caught:
        client.update_pool(pool_id, body)
    assert caught.value.status_code == 400
    assert _details(caught.value)["PropertyName"] == prop


def test_update_properties_replaces_and_what_it_leaves_out_is_removed(client, cleanup):
    pool_id = _empty_pool(client, cleanup)
    client.update_pool(
        pool_id,
        models.BatchPoolUpdateOptions(
            start_task=models.BatchStartTask(command_line="/bin/true"),
            metadata=[models.BatchMetadataItem(name="a", value="1")],
        ),
    )
    etag = client.get_pool(pool_id).etag
    client.replace_pool_properties(
        pool_id,
        models.BatchPoolReplaceOptions(
            application_package_references=[], metadata=[models.BatchMetadataItem(name="b", value="2")]
        ),
    )
    pool = client.get_pool(pool_id)
    assert pool.start_task is None
    assert [(m.name, m.value) for m in pool.metadata] == [("b", "2")]
    assert pool.etag != etag


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"applicationPackageReferences": []}, 400, "MissingRequiredProperty"),
        ({"metadata": []}, 400, "MissingRequiredProperty"),
        (
            {"applicationPackageReferences": [{"applicationId": "no-such-app"}], "metadata": []},
            409,
            "InvalidApplicationPackageReferences",
        ),
    ],
    ids=["no-metadata", "no-packages", "unknown-package"],
)
def test_update_properties_needs_packages_and_metadata_and_known_packages(client, cleanup, body, status, code):
    pool_id = _empty_pool(client, cleanup)
    client.update_pool(pool_id, models.BatchPoolUpdateOptions(metadata=[models.BatchMetadataItem(name="a", value="1")]))
    with pytest.raises(HttpResponseError) as caught:
        client.replace_pool_properties(pool_id, body)
    assert (caught.value.status_code, caught.value.error.code) == (status, code)
    assert [m.name for m in client.get_pool(pool_id).metadata] == ["a"]


def test_expanding_anything_but_pool_stats_is_refused_not_ignored(client, pool):
    """stats is the one thing a pool expands (test_statistics.py reads them)."""
    for read in (lambda: client.get_pool(pool, expand=["nodes"]), lambda: list(client.list_pools(expand=["nodes"]))):
        with pytest.raises(HttpResponseError) as caught:
            read()
        assert caught.value.status_code == 400
        assert _details(caught.value)["QueryParameterName"] == "$expand"
