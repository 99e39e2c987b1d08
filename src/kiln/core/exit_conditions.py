"""Exit conditions (batch-semantics §6.3): which exitOptions apply when a task completes.

The first match wins: a pre-processing error uses `preProcessingError`; an exit code listed in
`exitCodes`, then one inside `exitCodeRanges`; any other non-zero code uses `default`; exit 0 keeps
the built-in defaults unless 0 is listed; an upload error uses `fileUploadError` unless an exit-code
entry matched. Fields an exitOptions leaves out take the defaults of the completion: none/satisfy
for exit code 0, terminate/block for everything else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class JobAction(StrEnum):
    NONE = "none"
    DISABLE = "disable"
    TERMINATE = "terminate"


class DependencyAction(StrEnum):
    SATISFY = "satisfy"
    BLOCK = "block"


@dataclass(frozen=True, slots=True)
class ExitOptions:
    """What the service does after a task completes: to its job, and to the tasks that depend on it."""

    job_action: JobAction
    dependency_action: DependencyAction


#: The built-in defaults: a clean exit (code 0) and anything else.
SUCCESS_DEFAULTS = ExitOptions(JobAction.NONE, DependencyAction.SATISFY)
FAILURE_DEFAULTS = ExitOptions(JobAction.TERMINATE, DependencyAction.BLOCK)

Conditions = Mapping[str, Any]


def _with_defaults(options: Mapping[str, Any] | None, defaults: ExitOptions) -> ExitOptions:
    options = options or {}
    job_action = options.get("jobAction")
    dependency_action = options.get("dependencyAction")
    return ExitOptions(
        JobAction(job_action.lower()) if job_action else defaults.job_action,
        DependencyAction(dependency_action.lower()) if dependency_action else defaults.dependency_action,
    )


def _listed(conditions: Conditions, exit_code: int) -> Mapping[str, Any] | None:
    """The exitOptions of the first exitCodes entry, else the first exitCodeRanges entry, that holds the code."""
    for entry in conditions.get("exitCodes") or ():
        if entry["code"] == exit_code:
            return entry["exitOptions"]
    for entry in conditions.get("exitCodeRanges") or ():
        if entry["start"] <= exit_code <= entry["end"]:
            return entry["exitOptions"]
    return None


def resolve(
    conditions: Conditions | None,
    *,
    exit_code: int | None,
    pre_processing_error: bool = False,
    upload_error: bool = False,
) -> ExitOptions:
    """The exit options of a task that completed with this exit code or error."""
    conditions = conditions or {}
    default = conditions.get("default")
    if pre_processing_error or exit_code is None:
        return _with_defaults(conditions.get("preProcessingError") or default, FAILURE_DEFAULTS)
    defaults = SUCCESS_DEFAULTS if exit_code == 0 and not upload_error else FAILURE_DEFAULTS
    listed = _listed(conditions, exit_code)
    if listed is not None:  # an explicit exit-code entry wins over an upload error
        return _with_defaults(listed, defaults)
    if upload_error:
        return _with_defaults(conditions.get("fileUploadError") or default, FAILURE_DEFAULTS)
    if exit_code != 0:
        return _with_defaults(default, FAILURE_DEFAULTS)
    return SUCCESS_DEFAULTS


def for_ended(conditions: Conditions | None) -> ExitOptions:
    """A task ended by the terminate API: a failure without an exit code; only `default` applies to it."""
    return _with_defaults((conditions or {}).get("default"), FAILURE_DEFAULTS)


def all_options(conditions: Conditions | None) -> list[tuple[str, Mapping[str, Any]]]:
    """Every exitOptions of the conditions, with the property path a validation error names."""
    conditions = conditions or {}
    found: list[tuple[str, Mapping[str, Any]]] = []
    for name in ("exitCodes", "exitCodeRanges"):
        for index, entry in enumerate(conditions.get(name) or ()):
            if entry.get("exitOptions") is not None:
                found.append((f"exitConditions.{name}[{index}].exitOptions", entry["exitOptions"]))
    for name in ("preProcessingError", "fileUploadError", "default"):
        if conditions.get(name) is not None:
            found.append((f"exitConditions.{name}", conditions[name]))
    return found


def check_allowed(job_spec: Mapping[str, Any], conditions: Conditions | None) -> None:
    """A jobAction needs a job with onTaskFailure=performexitoptionsjobaction; a dependencyAction needs
    a job that uses task dependencies. Otherwise Batch rejects the task with a 400."""
    from kiln.errors import InvalidPropertyValue

    for path, options in all_options(conditions):
        if options.get("jobAction") and job_spec.get("onTaskFailure") != "performexitoptionsjobaction":
            raise InvalidPropertyValue(
                f"{path}.jobAction",
                options["jobAction"],
                "A jobAction can be given only when the job's onTaskFailure is performexitoptionsjobaction.",
            )
        if options.get("dependencyAction") and not job_spec.get("usesTaskDependencies"):
            raise InvalidPropertyValue(
                f"{path}.dependencyAction",
                options["dependencyAction"],
                "A dependencyAction can be given only when the job uses task dependencies (usesTaskDependencies).",
            )
