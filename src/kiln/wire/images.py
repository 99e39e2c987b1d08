"""The VM images a Kiln pool may name: Canonical's Ubuntu LTS images as Batch's listSupportedImages lists them.

A Kiln node runs on the host, whatever the image; the list is there so that code written for Azure (which looks
an image up, or names one the samples still use) gets Azure's answers, and a pool naming an image or node agent
SKU Batch would not run is refused at create as Batch refuses it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kiln.errors import InvalidPropertyValue, MissingRequiredProperty

GEN2 = "Generation2VMImage"


@dataclass(frozen=True, slots=True)
class SupportedImage:
    publisher: str
    offer: str
    sku: str
    node_agent_sku_id: str
    verified: bool = True
    capabilities: tuple[str, ...] = ()
    #: when Batch stops accepting pools of this image (ISO 8601, UTC); Kiln keeps accepting them
    end_of_life: str | None = None

    def to_wire(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "imageReference": {"publisher": self.publisher, "offer": self.offer, "sku": self.sku, "version": "latest"},
            "verificationType": "verified" if self.verified else "unverified",
            "nodeAgentSKUId": self.node_agent_sku_id,
        }
        if self.capabilities:
            doc["capabilities"] = list(self.capabilities)
        if self.end_of_life:
            doc["batchSupportEndOfLife"] = self.end_of_life
        doc["osType"] = "linux"
        return doc

    def matches(self, reference: Mapping[str, Any]) -> bool:
        """Publisher, offer and SKU compare without case, as Batch's do; any version is accepted."""
        return all(
            str(reference.get(name) or "").lower() == getattr(self, name).lower()
            for name in ("publisher", "offer", "sku")
        )


_UBUNTU_18_EOL = "2023-05-30T00:00:00Z"  # Azure/Batch#152
_UBUNTU_20_EOL = "2025-04-23T00:00:00Z"  # Azure/Batch#174
_UBUNTU_22_EOL = "2027-06-30T00:00:00Z"  # Azure/Batch#200

#: In Batch's order (by publisher, offer, SKU). 18.04 and 20.04 are past Batch's end of life but stay listed:
#: samples and tools still ask for them.
SUPPORTED_IMAGES: tuple[SupportedImage, ...] = (
    SupportedImage("Canonical", "UbuntuServer", "18.04-LTS", "batch.node.ubuntu 18.04", end_of_life=_UBUNTU_18_EOL),
    SupportedImage(
        "canonical", "0001-com-ubuntu-server-focal", "20_04-lts", "batch.node.ubuntu 20.04", end_of_life=_UBUNTU_20_EOL
    ),
    SupportedImage(
        "canonical",
        "0001-com-ubuntu-server-focal",
        "20_04-lts-gen2",
        "batch.node.ubuntu 20.04",
        capabilities=(GEN2,),
        end_of_life=_UBUNTU_20_EOL,
    ),
    SupportedImage(
        "canonical", "0001-com-ubuntu-server-jammy", "22_04-lts", "batch.node.ubuntu 22.04", end_of_life=_UBUNTU_22_EOL
    ),
    SupportedImage(
        "canonical",
        "0001-com-ubuntu-server-jammy",
        "22_04-lts-gen2",
        "batch.node.ubuntu 22.04",
        verified=False,
        capabilities=(GEN2,),
        end_of_life=_UBUNTU_22_EOL,
    ),
    SupportedImage("canonical", "ubuntu-24_04-lts", "server", "batch.node.ubuntu 24.04", capabilities=(GEN2,)),
    SupportedImage("canonical", "ubuntu-24_04-lts", "server-gen1", "batch.node.ubuntu 24.04"),
)

#: Fields of virtualMachineConfiguration whose absence would change what a task sees, and that Kiln cannot
#: honour on a host process: refused rather than stored and ignored.
REFUSED_VM_FIELDS = {
    "containerConfiguration": "Kiln's nodes run tasks as host processes and have no container runtime.",
}
#: Pool fields refused for the same reason.
REFUSED_POOL_FIELDS = {
    "mountConfiguration": "Kiln's nodes cannot mount file systems; fetch inputs with resourceFiles instead.",
}


def supported_images() -> list[dict[str, Any]]:
    return [image.to_wire() for image in SUPPORTED_IMAGES]


def check_pool(doc: Mapping[str, Any]) -> None:
    """A pool spec's VM configuration and the fields Kiln refuses, as a pool create checks them."""
    refuse_pool_fields(doc)
    vm = doc.get("virtualMachineConfiguration")
    if not isinstance(vm, Mapping):
        raise MissingRequiredProperty("virtualMachineConfiguration")
    check_vm_configuration(vm)


def refuse_pool_fields(doc: Mapping[str, Any]) -> None:
    for name, reason in REFUSED_POOL_FIELDS.items():
        if doc.get(name):
            raise InvalidPropertyValue(name, None, reason)


def check_vm_configuration(vm: Mapping[str, Any]) -> None:
    where = "virtualMachineConfiguration"
    for name, reason in REFUSED_VM_FIELDS.items():
        if vm.get(name):
            raise InvalidPropertyValue(f"{where}.{name}", None, reason)
    reference = vm.get("imageReference")
    if not isinstance(reference, Mapping):
        raise MissingRequiredProperty(f"{where}.imageReference")
    agent = vm.get("nodeAgentSKUId")
    if not agent:
        raise MissingRequiredProperty(f"{where}.nodeAgentSKUId")
    if reference.get("virtualMachineImageId"):
        raise InvalidPropertyValue(
            f"{where}.imageReference.virtualMachineImageId",
            reference["virtualMachineImageId"],
            "Kiln runs Marketplace images only: use one that listSupportedImages lists.",
        )
    image = next((image for image in SUPPORTED_IMAGES if image.matches(reference)), None)
    if image is None:
        named = "/".join(str(reference.get(name)) for name in ("publisher", "offer", "sku"))
        raise InvalidPropertyValue(
            f"{where}.imageReference", named, "The image is not supported: use one that listSupportedImages lists."
        )
    if str(agent).lower() != image.node_agent_sku_id:
        raise InvalidPropertyValue(
            f"{where}.nodeAgentSKUId",
            agent,
            f"The image {image.publisher}/{image.offer}/{image.sku} runs the node agent SKU "
            f"'{image.node_agent_sku_id}'.",
        )


def materialize_vm_configuration(vm: Mapping[str, Any]) -> dict[str, Any]:
    """As Batch stores it: the image version defaults to latest."""
    reference = {**vm["imageReference"]}
    reference.setdefault("version", "latest")
    return {**vm, "imageReference": reference}
