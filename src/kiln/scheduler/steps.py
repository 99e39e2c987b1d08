"""Builds the steps a node runs from stored job and task specs (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kiln.compute.protocol import ResourceFile, Step
from kiln.core.job_token import JobTokens
from kiln.core.task import task_dir
from kiln.wire.times import duration_seconds


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a step runs: enough to build its environment."""

    account_name: str
    account_url: str
    pool_id: str
    node_id: str
    node_root: str
    #: the pool's named userAccounts (as stored: no secrets), for userIdentity.username
    user_accounts: tuple[dict[str, Any], ...] = ()
    tokens: JobTokens | None = None  #: issues AZ_BATCH_AUTHENTICATION_TOKEN to tasks that ask for job access
    dedicated: bool = True  #: False on a low-priority (spot) node


def _environment(*settings: list[dict[str, Any]] | None) -> dict[str, str]:
    """Later lists win: the job's common settings, then the task's own."""
    merged: dict[str, str] = {}
    for items in settings:
        for item in items or ():
            merged[item["name"]] = item.get("value") or ""
    return merged


def _resource_files(spec: Mapping[str, Any]) -> tuple[ResourceFile, ...]:
    return resource_files(spec.get("resourceFiles"))


def resource_files(files: list[dict[str, Any]] | None) -> tuple[ResourceFile, ...]:
    return tuple(
        ResourceFile(http_url=f["httpUrl"], file_path=f["filePath"], file_mode=f.get("fileMode"))
        for f in files or ()
        if f.get("httpUrl")
    )


def _node_context(where: Placement) -> dict[str, str]:
    return {
        "AZ_BATCH_ACCOUNT_NAME": where.account_name,
        "AZ_BATCH_ACCOUNT_URL": where.account_url,
        "AZ_BATCH_POOL_ID": where.pool_id,
        "AZ_BATCH_NODE_ID": where.node_id,
        "AZ_BATCH_NODE_IS_DEDICATED": "true" if where.dedicated else "false",
    }


def _context(where: Placement, job_id: str, task_id: str) -> dict[str, str]:
    return {**_node_context(where), "AZ_BATCH_JOB_ID": job_id, "AZ_BATCH_TASK_ID": task_id}


def _identity(spec: Mapping[str, Any], where: Placement) -> dict[str, Any]:
    """Step fields of the identity: a named user account of the pool (scope "user"; user None if the
    pool has no such account), or the autoUser's elevation and scope (Azure's default: pool)."""
    identity = spec.get("userIdentity") or {}
    if identity.get("username"):
        name = identity["username"]
        account = next((a for a in where.user_accounts if a["name"].lower() == name.lower()), None)
        if account is None:
            return {"scope": "user", "user": {"name": name}, "user_missing": True}
        linux = account.get("linuxUserConfiguration") or {}
        return {
            "scope": "user",
            "elevated": account.get("elevationLevel") == "admin",
            "user": {"name": account["name"], "uid": linux.get("uid"), "gid": linux.get("gid")},
        }
    auto = identity.get("autoUser") or {}
    return {
        "elevated": str(auto.get("elevationLevel", "")).lower() == "admin",
        "scope": str(auto.get("scope") or "pool").lower(),
    }


def _prep_dir(job: Mapping[str, Any]) -> str | None:
    prep = job["spec"].get("jobPreparationTask")
    return task_dir(job["id"], prep["id"]) if prep else None


def _token(job: Mapping[str, Any], spec: Mapping[str, Any], where: Placement) -> dict[str, str]:
    """AZ_BATCH_AUTHENTICATION_TOKEN for a task whose authenticationTokenSettings grant it its job."""
    access = (spec.get("authenticationTokenSettings") or {}).get("access") or ()
    if where.tokens is None or "job" not in access:
        return {}
    return {"AZ_BATCH_AUTHENTICATION_TOKEN": where.tokens.issue(job["id"], job["seq"])}


def task_step(
    step_id: str,
    job: Mapping[str, Any],
    task: Mapping[str, Any],
    where: Placement,
    *,
    slots: int = 0,
    ahead: bool = False,
) -> Step:
    """slots: what the node frees for a step sent ahead when this one finishes (0: nothing, as for the parts
    of a multi-instance task)."""
    spec = task["spec"]
    return Step(
        step_id=step_id,
        kind="task",
        node_root=where.node_root,
        task_dir=task_dir(job["id"], task["id"]),
        command_line=spec["commandLine"],
        environment=_environment(job["spec"].get("commonEnvironmentSettings"), spec.get("environmentSettings")),
        batch_context={**_context(where, job["id"], task["id"]), **_token(job, spec, where)},
        prep_task_dir=_prep_dir(job),
        resource_files=_resource_files(spec),
        max_wall_clock_seconds=duration_seconds(spec["constraints"].get("maxWallClockTime")),
        slots=slots,
        ahead=ahead,
        **_identity(spec, where),
    )


def prep_step(step_id: str, job: Mapping[str, Any], where: Placement) -> Step:
    spec = job["spec"]["jobPreparationTask"]
    return _job_step(step_id, "prep", job, spec, where, spec["constraints"].get("maxWallClockTime"))


def release_step(step_id: str, job: Mapping[str, Any], where: Placement) -> Step:
    spec = job["spec"]["jobReleaseTask"]
    return _job_step(step_id, "release", job, spec, where, spec.get("maxWallClockTime"))


def _job_step(
    step_id: str, kind: str, job: Mapping[str, Any], spec: Mapping[str, Any], where: Placement, wall_clock: str | None
) -> Step:
    return Step(
        step_id=step_id,
        kind=kind,
        node_root=where.node_root,
        task_dir=task_dir(job["id"], spec["id"]),
        command_line=spec["commandLine"],
        environment=_environment(job["spec"].get("commonEnvironmentSettings"), spec.get("environmentSettings")),
        batch_context=_context(where, job["id"], spec["id"]),
        prep_task_dir=_prep_dir(job),
        resource_files=_resource_files(spec),
        max_wall_clock_seconds=duration_seconds(wall_clock),
        **_identity(spec, where),
    )


#: Where a node's start task runs, relative to the node root (AZ_BATCH_NODE_STARTUP_DIR).
START_TASK_DIR = "startup"


def start_step(step_id: str, spec: Mapping[str, Any], where: Placement) -> Step:
    """The pool's start task (as the node took it at its last start): no job, no slots, and what it leaves
    running in the background keeps running (a start task often starts a service)."""
    return Step(
        step_id=step_id,
        kind="start",
        node_root=where.node_root,
        task_dir=START_TASK_DIR,
        command_line=spec["commandLine"],
        environment=_environment(spec.get("environmentSettings")),
        batch_context=_node_context(where),
        resource_files=_resource_files(spec),
        **_identity(spec, where),
    )
