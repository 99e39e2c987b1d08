"""Pydantic models of the Batch JSON that Kiln reads (camelCase on the wire).

Fields Kiln acts on are typed; anything else a client sends is kept (extra="allow") and echoed back,
as the service stores and returns configuration it does not interpret.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from kiln.errors import BadRequest, InvalidPropertyValue, MissingRequiredProperty
from kiln.wire import ids, images
from kiln.wire.times import UNLIMITED, duration_seconds, format_duration, format_time, parse_duration

RELEASE_MAX_SECONDS = 15 * 60
#: The longest command line Kiln accepts. Batch documents no limit but its 1 MB body; Windows nodes stop at
#: 32,767 characters (CreateProcess), and a longer line would only cost the node: splitting it is quadratic in
#: the length of a word, and exec refuses any word or environment string of 128 KiB or more.
#: compute/node/process.py refuses longer lines too (tasks stored before this limit).
COMMAND_LINE_MAX = 32_768
#: The longest environment variable value, for the same reasons as COMMAND_LINE_MAX.
ENVIRONMENT_VALUE_MAX = 32_768
#: The longest environment variable name.
ENVIRONMENT_NAME_MAX = 1024
#: Node counts are int32 in Batch's REST API: a larger target is refused by name (it once reached the store's
#: integer column as a 500, or, below 2**63, had Kiln start that many nodes).
TARGET_NODES_MAX = 2**31 - 1


class Wire(BaseModel):
    """Base of every wire model: camelCase aliases, unknown fields kept. Each model's validator is built when
    first used, not at import (~0.04 s of CPU of every server start)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow", defer_build=True)

    def dump(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def _lower_enum(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _as_utc(value: datetime | None) -> datetime | None:
    """A time without a zone is UTC."""
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


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


class LinuxUserConfiguration(Wire):
    uid: int | None = Field(default=None, ge=0)
    gid: int | None = Field(default=None, ge=0)
    ssh_private_key: str | None = None


class UserAccount(Wire):
    """A named account a pool creates on each node; tasks pick it with userIdentity.username."""

    name: str = Field(min_length=1, max_length=20)
    password: str = Field(min_length=1)
    elevation_level: ElevationLevel = ElevationLevel.NONADMIN
    linux_user_configuration: LinuxUserConfiguration | None = None

    _lower = field_validator("elevation_level", mode="before")(_lower_enum)

    def check(self, index: int) -> None:
        where = f"userAccounts[{index}].linuxUserConfiguration"
        linux = self.linux_user_configuration
        if linux is not None and (linux.uid is None) != (linux.gid is None):
            raise InvalidPropertyValue(f"{where}.uid", linux.uid, "uid and gid must be given together or not at all.")
        if linux is not None and self.elevation_level is ElevationLevel.NONADMIN and 0 in (linux.uid, linux.gid):
            raise InvalidPropertyValue(
                f"{where}.uid", linux.uid, "uid and gid 0 are root's; use elevationLevel admin for a root account."
            )

    def materialize(self) -> dict[str, Any]:
        """Stored and returned without its secrets (password, SSH key): nothing here needs them."""
        doc = self.dump()
        doc.pop("password", None)
        doc["elevationLevel"] = self.elevation_level.value
        if isinstance(doc.get("linuxUserConfiguration"), dict):
            doc["linuxUserConfiguration"].pop("sshPrivateKey", None)
        return doc


DEFAULT_IDENTITY = {"autoUser": {"scope": "pool", "elevationLevel": "nonadmin"}}


class EnvironmentSetting(Wire):
    name: str = Field(min_length=1, max_length=ENVIRONMENT_NAME_MAX)
    value: str | None = Field(default=None, max_length=ENVIRONMENT_VALUE_MAX)


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


class UploadCondition(StrEnum):
    TASKSUCCESS = "tasksuccess"
    TASKFAILURE = "taskfailure"
    TASKCOMPLETION = "taskcompletion"


class HttpHeader(Wire):
    name: str = Field(min_length=1)
    value: str | None = None


class OutputFileContainer(Wire):
    container_url: str = Field(min_length=1)
    path: str | None = None
    identity_reference: dict[str, Any] | None = None
    upload_headers: list[HttpHeader] | None = None


class OutputFileDestination(Wire):
    container: OutputFileContainer


class OutputFileUploadOptions(Wire):
    upload_condition: UploadCondition

    _lower = field_validator("upload_condition", mode="before")(_lower_enum)


class OutputFile(Wire):
    """Uploaded to a Blob container after the task's command exits (compute/node/output_files.py)."""

    file_pattern: str = Field(min_length=1)
    destination: OutputFileDestination
    upload_options: OutputFileUploadOptions

    def check(self, where: str) -> None:
        if self.destination.container.identity_reference is not None:
            raise InvalidPropertyValue(
                f"{where}.destination.container.identityReference",
                "identityReference",
                "Kiln has no managed identities: give a containerUrl with a SAS token that grants write.",
            )


class TaskConstraints(Wire):
    max_wall_clock_time: str | None = None
    retention_time: str | None = None
    max_task_retry_count: int | None = Field(default=None, ge=-1)

    def check(self) -> None:
        _check_duration(self.max_wall_clock_time, "constraints.maxWallClockTime")
        _check_duration(self.retention_time, "constraints.retentionTime")


class JobConstraints(Wire):
    max_wall_clock_time: str | None = None
    max_task_retry_count: int | None = Field(default=None, ge=-1)


class PoolLifetimeOption(StrEnum):
    JOB = "job"
    JOBSCHEDULE = "jobschedule"


class AutoPoolSpecification(Wire):
    auto_pool_id_prefix: str | None = Field(default=None, max_length=20)
    pool_lifetime_option: PoolLifetimeOption
    keep_alive: bool = False
    pool: PoolSpecification

    _lower = field_validator("pool_lifetime_option", mode="before")(_lower_enum)

    def check(self) -> None:
        if self.auto_pool_id_prefix:
            ids.check_id(self.auto_pool_id_prefix, "poolInfo.autoPoolSpecification.autoPoolIdPrefix")
        try:
            self.pool.check()
        except (InvalidPropertyValue, MissingRequiredProperty) as error:
            prefix_property(error, "poolInfo.autoPoolSpecification.pool.")
            raise

    def pool_add(self, pool_id: str) -> PoolAdd:
        """The pool to create: the pool specification with the generated id."""
        return PoolAdd.model_validate({**self.pool.dump(), "id": pool_id})

    def materialize(self) -> dict[str, Any]:
        doc = self.dump()
        doc["keepAlive"] = self.keep_alive
        doc["poolLifetimeOption"] = self.pool_lifetime_option.value
        return doc


def prefix_property(error: Exception, prefix: str) -> None:
    """Name the property as the client sent it (inside jobSpecification, autoPoolSpecification...)."""
    values = getattr(error, "values", None)
    if values and "PropertyName" in values and not values["PropertyName"].startswith(prefix):
        old = values["PropertyName"]
        values["PropertyName"] = prefix + old
        error.message = error.message.replace(f": {old}.", f": {prefix}{old}.")  # type: ignore[attr-defined]
        error.args = (error.message,)  # type: ignore[attr-defined]


class PoolInfo(Wire):
    pool_id: str | None = None
    auto_pool_specification: AutoPoolSpecification | None = None


class MetadataItem(Wire):
    name: str
    value: str


def materialize_constraints(constraints: TaskConstraints | None, default_retries: int) -> dict[str, Any]:
    c = constraints or TaskConstraints()
    return {
        "maxWallClockTime": c.max_wall_clock_time or UNLIMITED,
        "retentionTime": c.retention_time or "P7D",
        "maxTaskRetryCount": default_retries if c.max_task_retry_count is None else c.max_task_retry_count,
    }


def refuse_container(settings: dict[str, Any] | None, where: str) -> None:
    """containerSettings is for pools with a containerConfiguration, which Kiln's pools cannot have (they run
    no containers): Batch refuses it on other pools, and Kiln refuses it everywhere (400 naming it)."""
    if settings is not None:
        raise InvalidPropertyValue(
            f"{where}containerSettings", None, "Kiln nodes run no containers: a task cannot run in one."
        )


class JobPreparationTask(Wire):
    id: str = "jobpreparation"
    command_line: str = Field(min_length=1, max_length=COMMAND_LINE_MAX)
    resource_files: list[ResourceFile] | None = None
    environment_settings: list[EnvironmentSetting] | None = None
    constraints: TaskConstraints | None = None
    wait_for_success: bool = True
    rerun_on_node_reboot_after_success: bool = True
    user_identity: UserIdentity | None = None
    container_settings: dict[str, Any] | None = None

    def materialize(self) -> dict[str, Any]:
        doc = self.dump()
        doc["constraints"] = materialize_constraints(self.constraints, 0)  # not inherited from the job
        doc["waitForSuccess"] = self.wait_for_success
        doc["rerunOnNodeRebootAfterSuccess"] = self.rerun_on_node_reboot_after_success
        doc.setdefault("userIdentity", DEFAULT_IDENTITY)
        return doc


class JobReleaseTask(Wire):
    id: str = "jobrelease"
    command_line: str = Field(min_length=1, max_length=COMMAND_LINE_MAX)
    resource_files: list[ResourceFile] | None = None
    environment_settings: list[EnvironmentSetting] | None = None
    max_wall_clock_time: str | None = None
    retention_time: str | None = None
    user_identity: UserIdentity | None = None
    container_settings: dict[str, Any] | None = None

    def materialize(self) -> dict[str, Any]:
        doc = self.dump()
        doc["maxWallClockTime"] = self.max_wall_clock_time or "PT15M"
        doc["retentionTime"] = self.retention_time or "P7D"
        doc.setdefault("userIdentity", DEFAULT_IDENTITY)
        return doc


class AuthenticationTokenSettings(Wire):
    """The Batch operations a task's AZ_BATCH_AUTHENTICATION_TOKEN may perform: "job" is the only scope."""

    access: list[str] | None = None

    @field_validator("access", mode="before")
    @classmethod
    def _job_only(cls, value: Any) -> Any:
        if isinstance(value, list):
            value = [_lower_enum(v) for v in value]
            for item in value:
                if item != "job":
                    raise InvalidPropertyValue(
                        "authenticationTokenSettings.access", item, "The only access scope is 'job'."
                    )
        return value


#: Fields of a job manager task that belong to the job, not to the task it becomes.
MANAGER_ONLY = ("killJobOnCompletion", "runExclusive", "allowLowPriorityNode")


class TaskFields(Wire):
    """The fields a task and a job manager task share, and their checks."""

    id: str
    display_name: str | None = Field(default=None, max_length=1024)
    command_line: str = Field(min_length=1, max_length=COMMAND_LINE_MAX)
    resource_files: list[ResourceFile] | None = None
    environment_settings: list[EnvironmentSetting] | None = None
    constraints: TaskConstraints | None = None
    required_slots: int = Field(default=1, ge=1)
    user_identity: UserIdentity | None = None
    authentication_token_settings: AuthenticationTokenSettings | None = None
    output_files: list[OutputFile] | None = None
    container_settings: dict[str, Any] | None = None

    def check_fields(self, prefix: str = "") -> None:
        """prefix: where the task sits in the body, for the property names of errors."""
        ids.check_id(self.id, f"{prefix}id")
        refuse_container(self.container_settings, prefix)
        for index, output in enumerate(self.output_files or ()):
            output.check(f"{prefix}outputFiles[{index}]")
        if self.constraints:
            _check_duration(self.constraints.max_wall_clock_time, f"{prefix}constraints.maxWallClockTime")
            _check_duration(self.constraints.retention_time, f"{prefix}constraints.retentionTime")


class JobManagerTask(TaskFields):
    """The job's first task: started before its other tasks, and by default the end of the job when it ends."""

    kill_job_on_completion: bool = True
    run_exclusive: bool = True
    allow_low_priority_node: bool = True  #: accepted and echoed: Kiln's nodes are all dedicated

    def check(self) -> None:
        self.check_fields("jobManagerTask.")

    def materialize(self, job_max_retries: int) -> dict[str, Any]:
        """As the job's GET shows it, defaults written out."""
        doc = self.dump()
        doc["constraints"] = materialize_constraints(self.constraints, job_max_retries)
        doc["requiredSlots"] = self.required_slots
        doc["killJobOnCompletion"] = self.kill_job_on_completion
        doc["runExclusive"] = self.run_exclusive
        doc["allowLowPriorityNode"] = self.allow_low_priority_node
        doc.setdefault("userIdentity", DEFAULT_IDENTITY)
        return doc

    def as_task(self) -> TaskAdd:
        """The ordinary task it becomes in the job's task list."""
        return TaskAdd.model_validate({k: v for k, v in self.dump().items() if k not in MANAGER_ONLY})


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
    job_manager_task: JobManagerTask | None = None
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
            raise InvalidPropertyValue(
                "maxParallelTasks",
                self.max_parallel_tasks,
                "maxParallelTasks must be -1 (unlimited) or greater than 0.",
            )
        if bool(self.pool_info.pool_id) == bool(self.pool_info.auto_pool_specification):
            raise InvalidPropertyValue("poolInfo", None, "Specify exactly one of poolId and autoPoolSpecification.")
        if (auto := self.pool_info.auto_pool_specification) is not None:
            auto.check()
        if self.job_manager_task is not None:
            self.job_manager_task.check()
        wall_clock = self.constraints.max_wall_clock_time if self.constraints is not None else None
        _check_duration(wall_clock, "constraints.maxWallClockTime")
        prep, release = self.job_preparation_task, self.job_release_task
        if release is not None and prep is None:
            raise InvalidPropertyValue(
                "jobReleaseTask", None, "A job release task can be specified only together with a job preparation task."
            )
        if prep is not None:
            ids.check_id(prep.id, "jobPreparationTask.id")
            refuse_container(prep.container_settings, "jobPreparationTask.")
            if prep.constraints:
                _check_duration(prep.constraints.max_wall_clock_time, "jobPreparationTask.constraints.maxWallClockTime")
                _check_duration(prep.constraints.retention_time, "jobPreparationTask.constraints.retentionTime")
        if release is not None:
            ids.check_id(release.id, "jobReleaseTask.id")
            refuse_container(release.container_settings, "jobReleaseTask.")
            _check_duration(release.max_wall_clock_time, "jobReleaseTask.maxWallClockTime")
            _check_duration(release.retention_time, "jobReleaseTask.retentionTime")
            seconds = duration_seconds(release.max_wall_clock_time)
            if release.max_wall_clock_time == UNLIMITED or (seconds is not None and seconds > RELEASE_MAX_SECONDS):
                raise InvalidPropertyValue(
                    "jobReleaseTask.maxWallClockTime",
                    release.max_wall_clock_time,
                    "The job release task's maxWallClockTime may not exceed 15 minutes (PT15M).",
                )
            if prep is not None and release.id.lower() == prep.id.lower():
                raise InvalidPropertyValue(
                    "jobReleaseTask.id",
                    release.id,
                    "The job release task's id must differ from the job preparation task's id.",
                )
        manager = self.job_manager_task
        for other, name in ((prep, "job preparation"), (release, "job release")):
            if manager is not None and other is not None and manager.id.lower() == other.id.lower():
                raise InvalidPropertyValue(
                    "jobManagerTask.id", manager.id, f"The job manager task's id must differ from the {name} task's id."
                )

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
        if self.job_manager_task:
            doc["jobManagerTask"] = self.job_manager_task.materialize(constraints["maxTaskRetryCount"])
        if self.job_preparation_task:
            doc["jobPreparationTask"] = self.job_preparation_task.materialize()
        if self.job_release_task:
            doc["jobReleaseTask"] = self.job_release_task.materialize()
        if self.pool_info.auto_pool_specification is not None:
            doc["poolInfo"] = {"autoPoolSpecification": self.pool_info.auto_pool_specification.materialize()}
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

    def check(self) -> None:
        if self.constraints is not None:
            _check_duration(self.constraints.max_wall_clock_time, "constraints.maxWallClockTime")


class JobActionKind(StrEnum):
    NONE = "none"
    DISABLE = "disable"
    TERMINATE = "terminate"


class DependencyActionKind(StrEnum):
    SATISFY = "satisfy"
    BLOCK = "block"


class ExitOptions(Wire):
    job_action: JobActionKind | None = None
    dependency_action: DependencyActionKind | None = None

    _lower = field_validator("job_action", "dependency_action", mode="before")(_lower_enum)


class ExitCodeMapping(Wire):
    code: int
    exit_options: ExitOptions


class ExitCodeRangeMapping(Wire):
    start: int
    end: int
    exit_options: ExitOptions

    @model_validator(mode="after")
    def _ordered(self) -> ExitCodeRangeMapping:
        if self.start > self.end:
            raise ValueError("The range's start may not be greater than its end.")
        return self


class ExitConditions(Wire):
    exit_codes: list[ExitCodeMapping] | None = None
    exit_code_ranges: list[ExitCodeRangeMapping] | None = None
    pre_processing_error: ExitOptions | None = None
    file_upload_error: ExitOptions | None = None
    default: ExitOptions | None = None


class TaskIdRange(Wire):
    start: int
    end: int

    @model_validator(mode="after")
    def _ordered(self) -> TaskIdRange:
        if self.start > self.end:
            raise ValueError("The range's start may not be greater than its end.")
        return self


#: Batch stores a task's dependency list in 64,000 characters: the ids, and (in Kiln) the ranges written "start-end".
DEPENDENCY_LIST_MAX = 64_000


class TaskDependencies(Wire):
    task_ids: list[str] | None = None
    task_id_ranges: list[TaskIdRange] | None = None

    def check(self, task_id: str) -> None:
        task_ids = self.task_ids or []
        for index, parent in enumerate(task_ids):
            ids.check_id(parent, f"dependsOn.taskIds[{index}]")
            if parent.lower() == task_id.lower():
                raise InvalidPropertyValue(f"dependsOn.taskIds[{index}]", parent, "A task cannot depend on itself.")
        if sum(len(parent) for parent in task_ids) > DEPENDENCY_LIST_MAX:
            raise BadRequest(
                f"The task ids in dependsOn.taskIds add up to more than {DEPENDENCY_LIST_MAX} "
                "characters; use taskIdRanges instead.",
                code="TaskDependencyListTooLong",
            )
        ranges = self.task_id_ranges or []
        if sum(len(f"{r.start}-{r.end},") for r in ranges) > DEPENDENCY_LIST_MAX:
            raise BadRequest(
                f"dependsOn.taskIdRanges has {len(ranges)} ranges, too many to store; merge adjacent ranges.",
                code="TaskDependencyRangesTooLong",
            )


class MultiInstanceSettings(Wire):
    number_of_instances: int | None = Field(default=None, ge=1)
    coordination_command_line: str = Field(min_length=1, max_length=COMMAND_LINE_MAX)
    common_resource_files: list[ResourceFile] | None = None


class TaskAdd(TaskFields):
    exit_conditions: ExitConditions | None = None
    depends_on: TaskDependencies | None = None
    multi_instance_settings: MultiInstanceSettings | None = None

    def check(self) -> None:
        self.check_fields()
        if self.depends_on is not None:
            self.depends_on.check(self.id)
        if self.multi_instance_settings is not None and self.required_slots != 1:
            raise InvalidPropertyValue(
                "requiredSlots", self.required_slots, "A multi-instance task must use 1 slot on each of its nodes."
            )

    def materialize(self, job_max_retries: int) -> dict[str, Any]:
        doc = self.dump()
        doc["constraints"] = materialize_constraints(self.constraints, job_max_retries)
        doc["requiredSlots"] = self.required_slots
        doc.setdefault("userIdentity", DEFAULT_IDENTITY)
        if self.multi_instance_settings is not None:
            doc["multiInstanceSettings"]["numberOfInstances"] = self.multi_instance_settings.number_of_instances or 1
        return doc


class TaskUpdate(Wire):
    constraints: TaskConstraints | None = None


class StartTask(Wire):
    """A pool's start task: run on each node as it joins, reboots or is reimaged (batch-semantics-2 §5.1)."""

    command_line: str = Field(min_length=1, max_length=COMMAND_LINE_MAX)
    resource_files: list[ResourceFile] | None = None
    environment_settings: list[EnvironmentSetting] | None = None
    user_identity: UserIdentity | None = None
    max_task_retry_count: int = Field(default=0, ge=-1)
    wait_for_success: bool = True
    container_settings: dict[str, Any] | None = None

    def check(self, where: str = "startTask") -> None:
        refuse_container(self.container_settings, f"{where}.")

    def materialize(self) -> dict[str, Any]:
        doc = self.dump()
        doc["maxTaskRetryCount"] = self.max_task_retry_count
        doc["waitForSuccess"] = self.wait_for_success
        doc.setdefault("userIdentity", DEFAULT_IDENTITY)
        return doc


def check_user_accounts(accounts: list[UserAccount] | None) -> None:
    """Each account valid, and no two with one name (case-insensitive)."""
    names: set[str] = set()
    for index, account in enumerate(accounts or ()):
        account.check(index)
        if account.name.lower() in names:
            raise InvalidPropertyValue(
                f"userAccounts[{index}].name", account.name, "Another user account of the pool has this name."
            )
        names.add(account.name.lower())


class PoolSpecification(Wire):
    """A pool's fields without its id: the body of an auto pool specification."""

    display_name: str | None = Field(default=None, max_length=1024)
    vm_size: str = Field(min_length=1)
    target_dedicated_nodes: int = Field(default=0, ge=0, le=TARGET_NODES_MAX)
    target_low_priority_nodes: int = Field(default=0, ge=0, le=TARGET_NODES_MAX)
    resize_timeout: str | None = None
    enable_auto_scale: bool = False
    auto_scale_formula: str | None = None
    auto_scale_evaluation_interval: str | None = None
    task_slots_per_node: int = Field(default=1, ge=1, le=256)
    enable_inter_node_communication: bool = False
    task_scheduling_policy: dict[str, Any] | None = None
    start_task: StartTask | None = None
    user_accounts: list[UserAccount] | None = None
    metadata: list[MetadataItem] | None = None

    def check(self) -> None:
        check_user_accounts(self.user_accounts)
        self._check_autoscale()
        _check_duration(self.resize_timeout, "resizeTimeout")
        images.check_pool(self.dump())
        if self.start_task is not None:
            self.start_task.check()

    #: Whether this kind of pool may autoscale: a pool added by itself may, an auto pool not yet.
    AUTOSCALE: ClassVar[bool] = False

    def _check_autoscale(self) -> None:
        """The settings' shape; the formula's syntax and the interval's range are the autoscale command's."""
        if not self.enable_auto_scale:
            for name in ("auto_scale_formula", "auto_scale_evaluation_interval"):
                if getattr(self, name) is not None:
                    raise InvalidPropertyValue(to_camel(name), None, "Only a pool with enableAutoScale takes it.")
            return
        if not self.AUTOSCALE:
            raise InvalidPropertyValue("enableAutoScale", True, "An auto pool cannot autoscale yet.")
        for name in ("target_dedicated_nodes", "target_low_priority_nodes"):
            if name in self.model_fields_set:
                raise InvalidPropertyValue(
                    to_camel(name),
                    getattr(self, name),
                    "A pool with enableAutoScale takes its targets from its formula.",
                )
        if self.auto_scale_formula is None:
            raise MissingRequiredProperty("autoScaleFormula")
        _check_duration(self.auto_scale_evaluation_interval, "autoScaleEvaluationInterval")

    def materialize(self) -> dict[str, Any]:
        doc = self.dump()
        doc["resizeTimeout"] = self.resize_timeout or "PT15M"
        doc["enableAutoScale"] = self.enable_auto_scale
        if self.enable_auto_scale:
            interval = parse_duration(self.auto_scale_evaluation_interval or "PT15M")
            doc["autoScaleEvaluationInterval"] = format_duration(interval)
        doc["taskSlotsPerNode"] = self.task_slots_per_node
        policy = dict(self.task_scheduling_policy or {})
        policy["nodeFillType"] = str(policy.get("nodeFillType", "spread")).capitalize()  # Batch answers "Spread"
        doc["taskSchedulingPolicy"] = policy
        doc["enableInterNodeCommunication"] = self.enable_inter_node_communication
        doc["virtualMachineConfiguration"] = images.materialize_vm_configuration(doc["virtualMachineConfiguration"])
        if self.user_accounts:
            doc["userAccounts"] = [account.materialize() for account in self.user_accounts]
        if self.start_task is not None:
            doc["startTask"] = self.start_task.materialize()
        for counted in ("targetDedicatedNodes", "targetLowPriorityNodes"):
            doc.pop(counted, None)  # live in their own columns
        return doc


class PoolAdd(PoolSpecification):
    id: str

    AUTOSCALE: ClassVar[bool] = True

    def check(self) -> None:
        ids.check_id(self.id)
        super().check()


class PoolResize(Wire):
    target_dedicated_nodes: int | None = Field(default=None, ge=0, le=TARGET_NODES_MAX)
    target_low_priority_nodes: int | None = Field(default=None, ge=0, le=TARGET_NODES_MAX)
    resize_timeout: str | None = None
    node_deallocation_option: str | None = None


class DisableJobOption(StrEnum):
    REQUEUE = "requeue"
    TERMINATE = "terminate"
    WAIT = "wait"


class JobDisable(Wire):
    disable_tasks: DisableJobOption

    _lower = field_validator("disable_tasks", mode="before")(_lower_enum)


class JobTerminate(Wire):
    terminate_reason: str | None = None


# ---------------------------------------------------------------------------------------------- job schedules
class ScheduleConfiguration(Wire):
    """The `schedule` element: when jobs are created (all optional; empty = one job, now)."""

    do_not_run_until: datetime | None = None
    do_not_run_after: datetime | None = None
    start_window: str | None = None
    recurrence_interval: str | None = None

    _utc = field_validator("do_not_run_until", "do_not_run_after")(_as_utc)

    def check(self, minimum: timedelta) -> None:
        """startWindow and recurrenceInterval: valid durations of at least `minimum` (Batch: 1 minute)."""
        for name in ("start_window", "recurrence_interval"):
            text = getattr(self, name)
            prop = f"schedule.{to_camel(name)}"
            _check_duration(text, prop)
            if text is not None and parse_duration(text) < minimum:
                raise InvalidPropertyValue(prop, text, f"The value must be at least {format_duration(minimum)}.")

    def materialize(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        for name, value in (("doNotRunUntil", self.do_not_run_until), ("doNotRunAfter", self.do_not_run_after)):
            if value is not None:
                doc[name] = format_time(value)
        for name, text in (("startWindow", self.start_window), ("recurrenceInterval", self.recurrence_interval)):
            if text is not None:
                doc[name] = format_duration(parse_duration(text))
        return doc


class JobScheduleAdd(Wire):
    id: str
    display_name: str | None = Field(default=None, max_length=1024)
    schedule: ScheduleConfiguration
    job_specification: dict[str, Any]
    metadata: list[MetadataItem] | None = None


class JobScheduleUpdate(Wire):
    """PATCH: the fields present replace the stored ones. PUT: jobSpecification required, the others reset."""

    schedule: ScheduleConfiguration | None = None
    job_specification: dict[str, Any] | None = None
    metadata: list[MetadataItem] | None = None


class UploadBatchServiceLogs(Wire):
    """The body of uploadbatchservicelogs."""

    container_url: str = Field(min_length=1)
    start_time: datetime
    end_time: datetime | None = None
    identity_reference: dict[str, Any] | None = None

    _utc = field_validator("start_time", "end_time")(_as_utc)
