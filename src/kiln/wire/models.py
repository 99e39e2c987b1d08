"""Pydantic models of the Batch JSON that Kiln reads (camelCase on the wire).

Fields Kiln acts on are typed; anything else a client sends is kept (extra="allow") and echoed back,
as the service stores and returns configuration it does not interpret.
"""
from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from kiln.errors import BadRequest, InvalidPropertyValue
from kiln.wire import ids
from kiln.wire.times import UNLIMITED, duration_seconds, parse_duration

RELEASE_MAX_SECONDS = 15 * 60


class Wire(BaseModel):
    """Base of every wire model: camelCase aliases, unknown fields kept."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    def dump(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def _lower_enum(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _check_duration(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    try:
        parse_duration(value)
    except Exception:  # isodate raises its own error types
        raise InvalidPropertyValue(name, value, "The value is not a valid ISO 8601 duration.") from None
    return value


class ElevationLevel(StrEnum):
    NONADMIN = "nonadmin"
    ADMIN = "admin"


class AutoUserScope(StrEnum):
    TASK = "task"
    POOL = "pool"


class AutoUser(Wire):
    scope: AutoUserScope = AutoUserScope.POOL
    elevation_level: ElevationLevel = ElevationLevel.NONADMIN

    _lower = field_validator("scope", "elevation_level", mode="before")(_lower_enum)


class UserIdentity(Wire):
    username: str | None = None
    auto_user: AutoUser | None = None

    @model_validator(mode="after")
    def _one_of(self) -> UserIdentity:
        if self.username and self.auto_user:
            raise ValueError("Specify either username or autoUser, not both.")
        return self


DEFAULT_IDENTITY = {"autoUser": {"scope": "pool", "elevationLevel": "nonadmin"}}


class EnvironmentSetting(Wire):
    name: str = Field(min_length=1)
    value: str | None = None


class ResourceFile(Wire):
    http_url: str | None = None
    storage_container_url: str | None = None
    auto_storage_container_name: str | None = None
    file_path: str | None = None
    file_mode: str | None = None
    blob_prefix: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ResourceFile:
        sources = [s for s in (self.http_url, self.storage_container_url, self.auto_storage_container_name) if s]
        if len(sources) != 1:
            raise ValueError("Specify exactly one of httpUrl, storageContainerUrl or autoStorageContainerName.")
        if self.http_url and not self.file_path:
            raise ValueError("filePath is required with httpUrl.")
        return self


class TaskConstraints(Wire):
    max_wall_clock_time: str | None = None
    retention_time: str | None = None
    max_task_retry_count: int | None = Field(default=None, ge=-1)


class JobConstraints(Wire):
    max_wall_clock_time: str | None = None
    max_task_retry_count: int | None = Field(default=None, ge=-1)


class PoolInfo(Wire):
    pool_id: str | None = None
    auto_pool_specification: dict[str, Any] | None = None


class MetadataItem(Wire):
    name: str
    value: str


def _materialize_constraints(constraints: TaskConstraints | None, default_retries: int) -> dict[str, Any]:
    c = constraints or TaskConstraints()
    return {
        "maxWallClockTime": c.max_wall_clock_time or UNLIMITED,
        "retentionTime": c.retention_time or "P7D",
        "maxTaskRetryCount": default_retries if c.max_task_retry_count is None else c.max_task_retry_count,
    }


class JobPreparationTask(Wire):
    id: str = "jobpreparation"
    command_line: str = Field(min_length=1)
    resource_files: list[ResourceFile] | None = None
    environment_settings: list[EnvironmentSetting] | None = None
    constraints: TaskConstraints | None = None
    wait_for_success: bool = True
    rerun_on_node_reboot_after_success: bool = True
    user_identity: UserIdentity | None = None

    def materialize(self) -> dict[str, Any]:
        doc = self.dump()
        doc["constraints"] = _materialize_constraints(self.constraints, 0)  # not inherited from the job
        doc["waitForSuccess"] = self.wait_for_success
        doc["rerunOnNodeRebootAfterSuccess"] = self.rerun_on_node_reboot_after_success
        doc.setdefault("userIdentity", DEFAULT_IDENTITY)
        return doc


class JobReleaseTask(Wire):
    id: str = "jobrelease"
    command_line: str = Field(min_length=1)
    resource_files: list[ResourceFile] | None = None
    environment_settings: list[EnvironmentSetting] | None = None
    max_wall_clock_time: str | None = None
    retention_time: str | None = None
    user_identity: UserIdentity | None = None

    def materialize(self) -> dict[str, Any]:
        doc = self.dump()
        doc["maxWallClockTime"] = self.max_wall_clock_time or "PT15M"
        doc["retentionTime"] = self.retention_time or "P7D"
        doc.setdefault("userIdentity", DEFAULT_IDENTITY)
        return doc


class OnAllTasksComplete(StrEnum):
    NOACTION = "noaction"
    TERMINATEJOB = "terminatejob"


class OnTaskFailure(StrEnum):
    NOACTION = "noaction"
    PERFORMEXITOPTIONSJOBACTION = "performexitoptionsjobaction"


class JobAdd(Wire):
    id: str
    display_name: str | None = Field(default=None, max_length=1024)
    priority: int = Field(default=0, ge=-1000, le=1000)
    max_parallel_tasks: int = -1
    allow_task_preemption: bool | None = None
    uses_task_dependencies: bool = False
    constraints: JobConstraints | None = None
    pool_info: PoolInfo
    job_manager_task: dict[str, Any] | None = None
    job_preparation_task: JobPreparationTask | None = None
    job_release_task: JobReleaseTask | None = None
    common_environment_settings: list[EnvironmentSetting] | None = None
    on_all_tasks_complete: OnAllTasksComplete = OnAllTasksComplete.NOACTION
    on_task_failure: OnTaskFailure = OnTaskFailure.NOACTION
    metadata: list[MetadataItem] | None = None

    _lower = field_validator("on_all_tasks_complete", "on_task_failure", mode="before")(_lower_enum)

    def check(self) -> None:
        """Rules that span fields; raise Batch's 400s."""
        ids.check_id(self.id)
        if self.max_parallel_tasks != -1 and self.max_parallel_tasks < 1:
            raise InvalidPropertyValue("maxParallelTasks", self.max_parallel_tasks,
                                       "maxParallelTasks must be -1 (unlimited) or greater than 0.")
        if not self.pool_info.pool_id and not self.pool_info.auto_pool_specification:
            raise InvalidPropertyValue("poolInfo", None, "Specify poolId or autoPoolSpecification.")
        if self.pool_info.auto_pool_specification is not None:
            raise InvalidPropertyValue("poolInfo.autoPoolSpecification", None,
                                       "Auto pools are not supported yet; create the pool and give its poolId.")
        if self.job_manager_task is not None:
            raise InvalidPropertyValue("jobManagerTask", None, "Job manager tasks are not supported yet.")
        if self.uses_task_dependencies:
            raise InvalidPropertyValue("usesTaskDependencies", True, "Task dependencies are not supported yet.")
        _check_duration(self.constraints and self.constraints.max_wall_clock_time, "constraints.maxWallClockTime")
        prep, release = self.job_preparation_task, self.job_release_task
        if release is not None and prep is None:
            raise InvalidPropertyValue("jobReleaseTask", None,
                                       "A job release task can be specified only together with a job preparation task.")
        if prep is not None:
            ids.check_id(prep.id, "jobPreparationTask.id")
            if prep.constraints:
                _check_duration(prep.constraints.max_wall_clock_time, "jobPreparationTask.constraints.maxWallClockTime")
                _check_duration(prep.constraints.retention_time, "jobPreparationTask.constraints.retentionTime")
        if release is not None:
            ids.check_id(release.id, "jobReleaseTask.id")
            _check_duration(release.max_wall_clock_time, "jobReleaseTask.maxWallClockTime")
            _check_duration(release.retention_time, "jobReleaseTask.retentionTime")
            seconds = duration_seconds(release.max_wall_clock_time)
            if release.max_wall_clock_time == UNLIMITED or (seconds is not None and seconds > RELEASE_MAX_SECONDS):
                raise InvalidPropertyValue("jobReleaseTask.maxWallClockTime", release.max_wall_clock_time,
                                           "The job release task's maxWallClockTime may not exceed 15 minutes (PT15M).")
            if prep is not None and release.id.lower() == prep.id.lower():
                raise InvalidPropertyValue("jobReleaseTask.id", release.id,
                                           "The job release task's id must differ from the job preparation task's id.")

    def materialize(self) -> dict[str, Any]:
        """The stored job spec, with Batch's defaults written out as GET shows them."""
        doc = self.dump()
        doc["priority"] = self.priority
        doc["maxParallelTasks"] = self.max_parallel_tasks
        doc["allowTaskPreemption"] = bool(self.allow_task_preemption)
        doc["usesTaskDependencies"] = self.uses_task_dependencies
        doc["onAllTasksComplete"] = self.on_all_tasks_complete.value
        doc["onTaskFailure"] = self.on_task_failure.value
        constraints = (self.constraints or JobConstraints()).dump()
        constraints.setdefault("maxWallClockTime", UNLIMITED)
        constraints.setdefault("maxTaskRetryCount", 0)
        doc["constraints"] = constraints
        if self.job_preparation_task:
            doc["jobPreparationTask"] = self.job_preparation_task.materialize()
        if self.job_release_task:
            doc["jobReleaseTask"] = self.job_release_task.materialize()
        return doc


class JobPatch(Wire):
    """PATCH: only the fields present change. PUT uses the same fields, absent ones reset."""

    priority: int | None = Field(default=None, ge=-1000, le=1000)
    max_parallel_tasks: int | None = None
    allow_task_preemption: bool | None = None
    constraints: JobConstraints | None = None
    pool_info: PoolInfo | None = None
    on_all_tasks_complete: OnAllTasksComplete | None = None
    metadata: list[MetadataItem] | None = None

    _lower = field_validator("on_all_tasks_complete", mode="before")(_lower_enum)


class MultiInstanceSettings(Wire):
    number_of_instances: int | None = Field(default=None, ge=1)
    coordination_command_line: str = Field(min_length=1)
    common_resource_files: list[ResourceFile] | None = None


class TaskAdd(Wire):
    id: str
    display_name: str | None = Field(default=None, max_length=1024)
    command_line: str = Field(min_length=1)
    resource_files: list[ResourceFile] | None = None
    environment_settings: list[EnvironmentSetting] | None = None
    constraints: TaskConstraints | None = None
    required_slots: int = Field(default=1, ge=1)
    user_identity: UserIdentity | None = None
    exit_conditions: dict[str, Any] | None = None
    depends_on: dict[str, Any] | None = None
    multi_instance_settings: MultiInstanceSettings | None = None

    def check(self) -> None:
        ids.check_id(self.id)
        if self.constraints:
            _check_duration(self.constraints.max_wall_clock_time, "constraints.maxWallClockTime")
            _check_duration(self.constraints.retention_time, "constraints.retentionTime")
        if self.depends_on is not None:
            raise BadRequest("The job does not use task dependencies; set usesTaskDependencies on the job "
                             "to add tasks with dependsOn.", code="TaskDependenciesNotSpecifiedOnJob")
        if self.multi_instance_settings is not None and self.required_slots != 1:
            raise InvalidPropertyValue("requiredSlots", self.required_slots,
                                       "A multi-instance task must use 1 slot on each of its nodes.")

    def materialize(self, job_max_retries: int) -> dict[str, Any]:
        doc = self.dump()
        doc["constraints"] = _materialize_constraints(self.constraints, job_max_retries)
        doc["requiredSlots"] = self.required_slots
        doc.setdefault("userIdentity", DEFAULT_IDENTITY)
        if self.multi_instance_settings is not None:
            doc["multiInstanceSettings"]["numberOfInstances"] = self.multi_instance_settings.number_of_instances or 1
        return doc


class TaskUpdate(Wire):
    constraints: TaskConstraints | None = None


class StartTask(Wire):
    command_line: str = Field(min_length=1)


class PoolAdd(Wire):
    id: str
    display_name: str | None = Field(default=None, max_length=1024)
    vm_size: str = Field(min_length=1)
    target_dedicated_nodes: int = Field(default=0, ge=0)
    target_low_priority_nodes: int = Field(default=0, ge=0)
    resize_timeout: str | None = None
    enable_auto_scale: bool = False
    task_slots_per_node: int = Field(default=1, ge=1, le=256)
    enable_inter_node_communication: bool = False
    task_scheduling_policy: dict[str, Any] | None = None
    start_task: dict[str, Any] | None = None
    metadata: list[MetadataItem] | None = None

    def check(self) -> None:
        ids.check_id(self.id)
        if self.enable_auto_scale:
            raise InvalidPropertyValue("enableAutoScale", True, "Autoscale is not supported yet.")
        _check_duration(self.resize_timeout, "resizeTimeout")

    def materialize(self) -> dict[str, Any]:
        doc = self.dump()
        doc["resizeTimeout"] = self.resize_timeout or "PT15M"
        doc["enableAutoScale"] = False
        doc["taskSlotsPerNode"] = self.task_slots_per_node
        policy = dict(self.task_scheduling_policy or {})
        policy["nodeFillType"] = str(policy.get("nodeFillType", "spread")).lower()
        doc["taskSchedulingPolicy"] = policy
        doc["enableInterNodeCommunication"] = self.enable_inter_node_communication
        for counted in ("targetDedicatedNodes", "targetLowPriorityNodes"):
            doc.pop(counted, None)  # live in their own columns
        return doc


class PoolResize(Wire):
    target_dedicated_nodes: int | None = Field(default=None, ge=0)
    target_low_priority_nodes: int | None = Field(default=None, ge=0)
    resize_timeout: str | None = None
    node_deallocation_option: str | None = None


class JobTerminate(Wire):
    terminate_reason: str | None = None
