"""`$select` and `$expand` checked against what each kind of entity has: an unknown name is Batch's 400, not
a silently empty or unchanged answer.

The names are every top-level property the entity has had in any supported api-version (read from the SDKs'
models, azure-batch 9.0 to 15.1), so a client of any generation may select what its version names.
"""

from __future__ import annotations

from fastapi import Request

from kiln.api import versioning
from kiln.errors import InvalidQueryParameterValue
from kiln.wire import versions

_COMMON = "creationTime displayName eTag id lastModified state stateTransitionTime url"
_NAMES = {
    "pools": f"""{_COMMON} allocationState allocationStateTransitionTime applicationLicenses
        applicationPackageReferences autoScaleEvaluationInterval autoScaleFormula autoScaleRun certificateReferences
        cloudServiceConfiguration currentDedicatedNodes currentLowPriorityNodes currentNodeCommunicationMode
        enableAutoScale enableInterNodeCommunication identity maxTasksPerNode metadata mountConfiguration
        networkConfiguration resizeErrors resizeTimeout resourceTags startTask stats targetDedicatedNodes
        targetLowPriorityNodes targetNodeCommunicationMode taskSchedulingPolicy taskSlotsPerNode upgradePolicy
        userAccounts virtualMachineConfiguration vmSize""",
    "jobs": f"""{_COMMON} allowTaskPreemption commonEnvironmentSettings constraints executionInfo jobManagerTask
        jobPreparationTask jobReleaseTask maxParallelTasks metadata networkConfiguration onAllTasksComplete
        onTaskFailure poolInfo previousState previousStateTransitionTime priority stats usesTaskDependencies""",
    "jobschedules": f"""{_COMMON} executionInfo jobSpecification metadata previousState previousStateTransitionTime
        schedule stats""",
    "tasks": f"""{_COMMON} affinityInfo applicationPackageReferences authenticationTokenSettings commandLine
        constraints containerSettings dependsOn environmentSettings executionInfo exitConditions
        multiInstanceSettings nodeInfo outputFiles previousState previousStateTransitionTime requiredSlots
        resourceFiles stats userIdentity""",
    "nodes": """affinityId allocationTime certificateReferences endpointConfiguration errors id ipAddress ipv6Address
        isDedicated lastBootTime nodeAgentInfo recentTasks runningTaskSlotsCount runningTasksCount schedulingState
        startTask startTaskInfo state stateTransitionTime totalTasksRun totalTasksSucceeded url virtualMachineInfo
        vmSize""",
    "jobpreparationandreleasetaskstatuslist": """jobPreparationTaskExecutionInfo jobReleaseTaskExecutionInfo nodeId
        nodeUrl poolId""",
    "subtaskinfo": """containerInfo endTime exitCode failureInfo id nodeInfo previousState
        previousStateTransitionTime result startTime state stateTransitionTime""",
}
#: Lower-cased (Batch matches them case-insensitively), by the metadata fragment's entity set.
SELECTABLE: dict[str, frozenset[str]] = {kind: frozenset(names.lower().split()) for kind, names in _NAMES.items()}
#: What `$expand` may name, by entity set.
EXPANDABLE: dict[str, frozenset[str]] = {
    kind: frozenset({"stats"}) for kind in ("pools", "jobs", "jobschedules", "tasks")
}


def checked_select(request: Request, fragment: str) -> str | None:
    """The request's `$select` in the newest version's names, once it and `$expand` are known to name only
    what the entity set has; Batch's 400 InvalidQueryParameterValue naming the first that does not."""
    kind = fragment.partition("/")[0]
    select, expand = request.query_params.get("$select"), request.query_params.get("$expand")
    if expand is not None:  # the router adds what it names (kiln.api.statistics)
        _check("$expand", expand, EXPANDABLE.get(kind, frozenset()), kind)
    if select is None or kind not in SELECTABLE:
        return select
    _check("$select", select, SELECTABLE[kind] | {"*"}, kind)
    version = versioning.served(request)
    return ",".join(versions.upgrade_name(version, name.strip()) for name in select.split(","))


def _check(parameter: str, value: str, known: frozenset[str], kind: str) -> None:
    for name in (part.strip() for part in value.split(",")):
        if name.lower() not in known:
            allowed = ", ".join(sorted(known - {"*"})) or "nothing"
            raise InvalidQueryParameterValue(
                parameter, value, f"'{name}' is not a property of {kind} that {parameter} may name ({allowed})."
            )


def selected(request: Request, fragment: str) -> list[str] | None:
    """The top-level properties a list must render, lower-cased (None: all of them): what `$select` names,
    and stats when `$expand` asks for them."""
    select = checked_select(request, fragment)
    if select is None:
        return None
    names = [name.strip().lower() for name in select.split(",")]
    return names + ["stats"] if request.query_params.get("$expand") is not None else names
