"""Every api-version Kiln serves, and what differs between them on the wire, in one place.

Kiln's models are those of the newest version. A request in an older version is upgraded (its renamed fields
take their new names) before it is read; a response to it is downgraded (new names back to old ones, fields
that version does not have removed, shapes it had restored), so each SDK generation reads what the service
sent it. The differences were read from the SDKs' models, one release per api-version (azure-batch 9.0.0 to
15.1.0, npm @azure/batch 10.2.0).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Oldest first; each with the clients that send it.
VERSIONS: tuple[str, ...] = (
    "2020-03-01.11.0",  # azure-batch 9.x
    "2020-09-01.12.0",  # azure-batch 10.x
    "2021-06-01.14.0",  # azure-batch 11.x, npm @azure/batch 10.0
    "2022-01-01.15.0",  # azure-batch 12.x (Azure's Python samples), npm @azure/batch 10.1
    "2022-10-01.16.0",  # azure-batch 13.x, npm @azure/batch 10.2
    "2023-05-01.17.0",  # azure-batch 14.0
    "2023-11-01.18.0",  # azure-batch 14.1
    "2024-02-01.19.0",  # azure-batch 14.2, 15.0.0b1 (azure-cli's `az batch`)
    "2024-07-01.20.0",  # azure-batch 15.0.0b2
    "2025-06-01",  # azure-batch 15.1
)
NEWEST = VERSIONS[-1]
_ORDER = {version: index for index, version in enumerate(VERSIONS)}

#: Object keys whose members are the user's own names: never renamed or removed.
_FREE_FORM = frozenset({"resourceTags", "userAssignedIdentities"})

Json = dict[str, Any]


@dataclass(frozen=True)
class Change:
    """What one api-version changed against the one before it."""

    #: old name → new name (request and response bodies, any depth)
    renamed: dict[str, str] = field(default_factory=dict)
    #: fields this version introduced: absent from responses to older versions
    added: frozenset[str] = frozenset()
    #: path pattern → how a response body of that route looked before this version
    reshaped: dict[str, Callable[[Json], Json]] = field(default_factory=dict)


def _flat_task_counts(body: Json) -> Json:
    """Before 2020-09-01.12.0 the task counts were the body itself, with no slot counts."""
    return {key: value for key, value in body.items() if key == "odata.metadata"} | body.get("taskCounts", {})


_TASK_COUNTS = re.compile(r"^/jobs/[^/]+/taskcounts$")

#: Keyed by the version that made the change.
CHANGES: dict[str, Change] = {
    "2020-09-01.12.0": Change(
        renamed={"maxTasksPerNode": "taskSlotsPerNode"},
        added=frozenset({"requiredSlots", "runningTaskSlotsCount"}),
        reshaped={_TASK_COUNTS.pattern: _flat_task_counts},
    ),
    "2021-06-01.14.0": Change(added=frozenset({"maxParallelTasks", "identityReference", "virtualMachineInfo"})),
    "2022-01-01.15.0": Change(added=frozenset({"allowTaskPreemption", "uploadHeaders"})),
    "2022-10-01.16.0": Change(added=frozenset({"currentNodeCommunicationMode", "targetNodeCommunicationMode"})),
    "2023-05-01.17.0": Change(added=frozenset({"enableAcceleratedNetworking", "enableAutomaticUpgrade"})),
    "2023-11-01.18.0": Change(added=frozenset({"resourceTags", "scaleSetVmResourceId"})),
    "2024-02-01.19.0": Change(added=frozenset({"upgradePolicy", "upgradingOS"})),
    "2024-07-01.20.0": Change(added=frozenset({"deallocated", "deallocating", "containerHostBatchBindMounts"})),
    "2025-06-01": Change(added=frozenset({"ipv6Address", "ipv6RemoteLoginIPAddress", "ipv6RemoteLoginPort"})),
}


def resolve(version: str, *, loose: bool = False) -> str | None:
    """The version a request is served as: its own if supported, the newest if `loose`, else None."""
    if version in _ORDER:
        return version
    return NEWEST if loose else None


def _later(version: str) -> list[Change]:
    """The changes made after `version`, oldest first."""
    return [change for name, change in CHANGES.items() if _ORDER[name] > _ORDER[version]]


def upgrade_request(version: str, body: Json) -> Json:
    """A request body of `version` as the newest version names it."""
    renamed: dict[str, str] = {}
    for change in _later(version):
        renamed |= change.renamed
    return _walk(body, renamed, frozenset()) if renamed else body


def upgrade_name(version: str, name: str) -> str:
    """A property name of `version` as the newest version names it (a $select of an older client)."""
    for change in _later(version):
        name = next((new for old, new in change.renamed.items() if old.lower() == name.lower()), name)
    return name


def downgrade_response(version: str, path: str, body: Json) -> Json:
    """A response body of the newest version as `version` sent it."""
    later = _later(version)
    renamed: dict[str, str] = {}
    dropped: set[str] = set()
    for change in reversed(later):  # newest first: a field renamed twice goes back step by step
        renamed |= {new: old for old, new in change.renamed.items()}
        dropped |= change.added
    result = _walk(body, renamed, frozenset(dropped))
    for change in reversed(later):
        for pattern, reshape in change.reshaped.items():
            if re.match(pattern, path):
                result = reshape(result)
    return result


def changes_anything(version: str) -> bool:
    """Whether bodies of `version` differ from the newest version's at all."""
    return bool(_later(version))


def _walk(value: Any, renamed: dict[str, str], dropped: frozenset[str]) -> Any:
    if isinstance(value, list):
        return [_walk(item, renamed, dropped) for item in value]
    if not isinstance(value, dict):
        return value
    return {
        renamed.get(key, key): item if key in _FREE_FORM else _walk(item, renamed, dropped)
        for key, item in value.items()
        if key not in dropped
    }
