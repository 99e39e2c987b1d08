"""The image check of a pool create, as data."""

from __future__ import annotations

import pytest

from kiln.errors import InvalidPropertyValue, MissingRequiredProperty
from kiln.wire.images import SUPPORTED_IMAGES, check_pool, materialize_vm_configuration, supported_images


def _vm(publisher: str, offer: str, sku: str, agent: str | None, **extra) -> dict:
    return {"imageReference": {"publisher": publisher, "offer": offer, "sku": sku}, "nodeAgentSKUId": agent, **extra}


JAMMY = _vm("canonical", "0001-com-ubuntu-server-jammy", "22_04-lts", "batch.node.ubuntu 22.04")


@pytest.mark.parametrize(
    "vm",
    [
        JAMMY,
        _vm("Canonical", "UbuntuServer", "18.04-LTS", "batch.node.ubuntu 18.04"),
        _vm("CANONICAL", "0001-COM-UBUNTU-SERVER-FOCAL", "20_04-LTS-GEN2", "Batch.Node.Ubuntu 20.04"),
        _vm("canonical", "ubuntu-24_04-lts", "server", "batch.node.ubuntu 24.04", dataDisks=[{"lun": 1}]),
    ],
)
def test_listed_images_with_their_agent_are_accepted(vm):
    check_pool({"virtualMachineConfiguration": vm})


@pytest.mark.parametrize(
    ("pool", "error", "prop"),
    [
        ({}, MissingRequiredProperty, "virtualMachineConfiguration"),
        (
            {"virtualMachineConfiguration": {"nodeAgentSKUId": "x"}},
            MissingRequiredProperty,
            "virtualMachineConfiguration.imageReference",
        ),
        (
            {"virtualMachineConfiguration": {**JAMMY, "nodeAgentSKUId": None}},
            MissingRequiredProperty,
            "virtualMachineConfiguration.nodeAgentSKUId",
        ),
        (
            {"virtualMachineConfiguration": _vm("canonical", "UbuntuServer", "16.04-LTS", "batch.node.ubuntu 16.04")},
            InvalidPropertyValue,
            "virtualMachineConfiguration.imageReference",
        ),
        (
            {"virtualMachineConfiguration": {**JAMMY, "nodeAgentSKUId": "batch.node.ubuntu 24.04"}},
            InvalidPropertyValue,
            "virtualMachineConfiguration.nodeAgentSKUId",
        ),
        (
            {
                "virtualMachineConfiguration": {
                    "imageReference": {"virtualMachineImageId": "/subscriptions/s/images/i"},
                    "nodeAgentSKUId": "batch.node.ubuntu 22.04",
                }
            },
            InvalidPropertyValue,
            "virtualMachineConfiguration.imageReference.virtualMachineImageId",
        ),
        (
            {"virtualMachineConfiguration": {**JAMMY, "containerConfiguration": {"type": "dockerCompatible"}}},
            InvalidPropertyValue,
            "virtualMachineConfiguration.containerConfiguration",
        ),
        (
            {"virtualMachineConfiguration": JAMMY, "mountConfiguration": [{}, {}]},
            InvalidPropertyValue,
            "mountConfiguration",
        ),
    ],
)
def test_what_batch_would_not_run_is_refused_naming_the_property(pool, error, prop):
    with pytest.raises(error) as caught:
        check_pool(pool)
    assert caught.value.values["PropertyName"] == prop


def test_the_list_is_canonical_ubuntu_linux_with_version_latest():
    listed = supported_images()
    assert len(listed) == len(SUPPORTED_IMAGES)
    assert {doc["osType"] for doc in listed} == {"linux"}
    assert {doc["imageReference"]["publisher"].lower() for doc in listed} == {"canonical"}
    assert {doc["nodeAgentSKUId"] for doc in listed} == {
        f"batch.node.ubuntu {v}" for v in ("18.04", "20.04", "22.04", "24.04")
    }


def test_the_stored_image_version_defaults_to_latest_and_keeps_a_given_one():
    assert materialize_vm_configuration(JAMMY)["imageReference"]["version"] == "latest"
    pinned = {**JAMMY, "imageReference": {**JAMMY["imageReference"], "version": "22.04.202401"}}
    assert materialize_vm_configuration(pinned)["imageReference"]["version"] == "22.04.202401"
