"""listSupportedImages, the image check at pool create, and listPoolNodeCounts, through the SDK."""

from __future__ import annotations

import pytest
from azure.batch import models
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from kiln.testing import UBUNTU, UBUNTU_DOC, unique


def _image(publisher: str, offer: str, sku: str, agent: str) -> models.VirtualMachineConfiguration:
    return models.VirtualMachineConfiguration(
        image_reference=models.BatchVmImageReference(publisher=publisher, offer=offer, sku=sku),
        node_agent_sku_id=agent,
    )


def test_supported_images_list_canonical_ubuntu_with_their_node_agent_skus(client):
    images = list(client.list_supported_images())
    by_sku = {(i.image_reference.offer, i.image_reference.sku): i for i in images}
    bionic = by_sku[("UbuntuServer", "18.04-LTS")]
    assert bionic.node_agent_sku_id == "batch.node.ubuntu 18.04"
    assert bionic.batch_support_end_of_life is not None and bionic.batch_support_end_of_life.year == 2023
    assert by_sku[("0001-com-ubuntu-server-focal", "20_04-lts")].node_agent_sku_id == "batch.node.ubuntu 20.04"
    jammy = by_sku[("0001-com-ubuntu-server-jammy", "22_04-lts-gen2")]
    assert (jammy.node_agent_sku_id, jammy.verification_type, jammy.capabilities) == (
        "batch.node.ubuntu 22.04",
        "unverified",
        ["Generation2VMImage"],
    )
    noble = by_sku[("ubuntu-24_04-lts", "server")]
    assert (noble.node_agent_sku_id, noble.os_type, noble.batch_support_end_of_life) == (
        "batch.node.ubuntu 24.04",
        "linux",
        None,
    )
    assert all(i.image_reference.version == "latest" for i in images)


def test_supported_images_filter_as_azure_allows(client):
    noble = list(client.list_supported_images(filter="nodeAgentSKUId eq 'batch.node.ubuntu 24.04'"))
    assert {i.image_reference.sku for i in noble} == {"server", "server-gen1"}
    unverified = list(client.list_supported_images(filter="verificationType eq 'unverified'"))
    assert [i.image_reference.sku for i in unverified] == ["22_04-lts-gen2"]
    assert list(client.list_supported_images(filter="osType eq 'windows'")) == []
    with pytest.raises(HttpResponseError) as caught:
        list(client.list_supported_images(filter="capabilities eq 'x'"))
    assert caught.value.error.code == "InvalidQueryParameterValue"


@pytest.mark.parametrize(
    ("vm", "prop"),
    [
        (None, "virtualMachineConfiguration"),
        (_image("MicrosoftWindowsServer", "WindowsServer", "2022-datacenter", "batch.node.windows amd64"), None),
        (_image("Canonical", "UbuntuServer", "16.04-LTS", "batch.node.ubuntu 16.04"), None),
        (_image("canonical", "0001-com-ubuntu-server-jammy", "22_04-lts", "batch.node.ubuntu 20.04"), None),
    ],
    ids=["no-vm-configuration", "windows", "xenial", "wrong-agent"],
)
def test_a_pool_azure_would_not_run_is_refused_and_not_created(client, vm, prop):
    pool_id = unique("badimage")
    with pytest.raises(HttpResponseError) as caught:
        client.create_pool(
            models.BatchPoolCreateOptions(id=pool_id, vm_size="standard_d2s_v3", virtual_machine_configuration=vm)
        )
    assert caught.value.status_code == 400
    details = {d.code: d.message for d in caught.value.error.details}
    if prop is None:
        assert caught.value.error.code == "InvalidPropertyValue"
        assert details["PropertyName"].startswith("virtualMachineConfiguration.")
    else:
        assert caught.value.error.code == "MissingRequiredProperty"
        assert details["PropertyName"] == prop
    with pytest.raises(ResourceNotFoundError):
        client.get_pool(pool_id)


@pytest.mark.parametrize(
    ("extra", "prop"),
    [
        (
            {"virtualMachineConfiguration": {**UBUNTU_DOC, "containerConfiguration": {"type": "dockerCompatible"}}},
            "virtualMachineConfiguration.containerConfiguration",
        ),
        (
            {
                "virtualMachineConfiguration": UBUNTU_DOC,
                "mountConfiguration": [{"nfsMountConfiguration": {"source": "s", "relativeMountPath": "m"}}],
            },
            "mountConfiguration",
        ),
    ],
    ids=["container", "mount"],
)
def test_fields_that_change_what_a_task_sees_are_refused_by_name(client, extra, prop):
    pool_id = unique("refused")
    with pytest.raises(HttpResponseError) as caught:
        client.create_pool({"id": pool_id, "vmSize": "standard_d2s_v3", **extra})
    assert caught.value.status_code == 400
    assert {d.code: d.message for d in caught.value.error.details}["PropertyName"] == prop


def test_an_older_image_samples_ask_for_is_accepted_and_stored_with_its_version(client, cleanup):
    pool_id = unique("bionic")
    cleanup(pool=pool_id)
    vm = _image("Canonical", "UbuntuServer", "18.04-LTS", "batch.node.ubuntu 18.04")
    client.create_pool(
        models.BatchPoolCreateOptions(id=pool_id, vm_size="standard_d2s_v3", virtual_machine_configuration=vm)
    )
    stored = client.get_pool(pool_id).virtual_machine_configuration
    assert stored.image_reference.version == "latest"
    assert stored.node_agent_sku_id == "batch.node.ubuntu 18.04"


def test_pool_node_counts_count_each_state(client, pool):
    counts = {c.pool_id: c for c in client.list_pool_node_counts()}
    shared = counts[pool]
    assert shared.dedicated.total == 2
    assert shared.dedicated.idle + shared.dedicated.running == 2
    assert shared.low_priority.total == 0
    only = list(client.list_pool_node_counts(filter=f"poolId eq '{pool}'"))
    assert [c.pool_id for c in only] == [pool]


def test_node_counts_of_an_empty_pool_are_zero(client, cleanup):
    pool_id = unique("emptycounts")
    cleanup(pool=pool_id)
    client.create_pool(models.BatchPoolCreateOptions(id=pool_id, vm_size="a", virtual_machine_configuration=UBUNTU))
    (counts,) = client.list_pool_node_counts(filter=f"poolId eq '{pool_id}'")
    assert counts.dedicated.total == 0 and counts.dedicated.creating == 0 and counts.low_priority.total == 0
