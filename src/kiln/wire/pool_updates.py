"""The bodies of a pool update (PATCH: the fields present) and of updateproperties (a replace)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from kiln.errors import InvalidPropertyValue
from kiln.wire import images
from kiln.wire.models import MetadataItem, StartTask, UserAccount, Wire, check_user_accounts

#: What PATCH may change only while the pool has no nodes (Batch's "only when the pool is empty").
EMPTY_POOL_ONLY = (
    "displayName",
    "vmSize",
    "enableInterNodeCommunication",
    "virtualMachineConfiguration",
    "taskSlotsPerNode",
    "taskSchedulingPolicy",
    "networkConfiguration",
    "userAccounts",
    "mountConfiguration",
    "upgradePolicy",
    "resourceTags",
)


class PoolPatch(Wire):
    """Every field Batch lets a PATCH change; anything else is refused by name."""

    display_name: str | None = Field(default=None, max_length=1024)
    vm_size: str | None = Field(default=None, min_length=1)
    enable_inter_node_communication: bool | None = None
    start_task: StartTask | None = None
    application_package_references: list[dict[str, Any]] | None = None
    metadata: list[MetadataItem] | None = None
    virtual_machine_configuration: dict[str, Any] | None = None
    task_slots_per_node: int | None = Field(default=None, ge=1, le=256)
    task_scheduling_policy: dict[str, Any] | None = None
    network_configuration: dict[str, Any] | None = None
    user_accounts: list[UserAccount] | None = None
    mount_configuration: list[dict[str, Any]] | None = None
    upgrade_policy: dict[str, Any] | None = None
    resource_tags: dict[str, str] | None = None
    target_node_communication_mode: str | None = None

    def check(self) -> None:
        if self.model_extra:
            name = sorted(self.model_extra)[0]
            raise InvalidPropertyValue(name, None, "This property cannot be changed with a pool update.")
        images.refuse_pool_fields(self.model_dump(by_alias=True, exclude_unset=True))
        if self.virtual_machine_configuration is not None:
            images.check_vm_configuration(self.virtual_machine_configuration)
        check_user_accounts(self.user_accounts)
        if self.start_task is not None:
            self.start_task.check()

    def changes(self) -> dict[str, Any]:
        """The fields present, stored as a create stores them (a startTask reaches existing nodes at their next
        reboot or reimage). A field sent as null is left as it is, as an absent one (Batch: "if omitted, ... left
        unchanged"): a null `taskSlotsPerNode` or `vmSize` must not empty what every pool has."""
        doc = self.model_dump(by_alias=True, exclude_unset=True, exclude_none=True, mode="json")
        if self.start_task is not None:
            doc["startTask"] = self.start_task.materialize()
        if self.virtual_machine_configuration is not None:
            doc["virtualMachineConfiguration"] = images.materialize_vm_configuration(self.virtual_machine_configuration)
        if self.user_accounts is not None:
            doc["userAccounts"] = [account.materialize() for account in self.user_accounts]
        if self.task_scheduling_policy is not None:
            policy = dict(self.task_scheduling_policy)
            policy["nodeFillType"] = str(policy.get("nodeFillType", "spread")).lower()
            doc["taskSchedulingPolicy"] = policy
        return doc


class PoolReplace(Wire):
    """updateproperties: packages and metadata are required; what is left out is removed (startTask) or reset."""

    start_task: StartTask | None = None
    application_package_references: list[dict[str, Any]]
    metadata: list[MetadataItem]
    target_node_communication_mode: str | None = None

    def check(self) -> None:
        if self.start_task is not None:
            self.start_task.check()

    def changes(self) -> dict[str, Any]:
        """Every replaceable field: None removes it from the stored spec."""
        return {
            "startTask": self.start_task.materialize() if self.start_task is not None else None,
            "applicationPackageReferences": self.application_package_references,
            "metadata": [item.dump() for item in self.metadata],
            "targetNodeCommunicationMode": self.target_node_communication_mode,
        }
