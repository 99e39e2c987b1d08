"""Builds the steps a node runs from stored job and task specs (pure)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kiln.compute.auto_storage import AutoStorage
from kiln.compute.protocol import AppPackage, OutputFile, ResourceFile, Step
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
    auto_storage: AutoStorage | None = None  #: the account's linked storage (autoStorageContainerName)
    #: the pool's application packages, which every step on the node gets
    packages: tuple[AppPackage, ...] = ()
    #: a task spec's own application packages
    task_packages: Callable[[Mapping[str, Any]], tuple[AppPackage, ...]] = lambda spec: ()
    dedicated: bool = True  #: False on a low-priority (spot) node


def _environment(*settings: list[dict[str, Any]] | None) -> dict[str, str]:
    """Later lists win: the job's common settings, then the task's own."""
    merged: dict[str, str] = {}
    for items in settings:
        for item in items or ():
            merged[item["name"]] = item.get("value") or ""
    return merged


def _resource_files(spec: Mapping[str, Any], where: Placement) -> tuple[ResourceFile, ...]:
    return resource_files(spec.get("resourceFiles"), where.auto_storage)


def resource_files(files: list[dict[str, Any]] | None, storage: AutoStorage | None) -> tuple[ResourceFile, ...]:
    return tuple(_resource_file(f, storage) for f in files or ())


def _resource_file(file: Mapping[str, Any], storage: AutoStorage | None) -> ResourceFile:
    """A container named by autoStorageContainerName gets a SAS URL of the linked account (with no account
    linked, no URL: the node fails the step, naming the setting)."""
    mode, path = file.get("fileMode"), file.get("filePath") or ""
    if file.get("httpUrl"):
        return ResourceFile(http_url=file["httpUrl"], file_path=path, file_mode=mode)
    if file.get("storageContainerUrl"):
        url, source = file["storageContainerUrl"], None
    else:
        source = file["autoStorageContainerName"]
        url = storage.container_url(source) if storage is not None else None
    return ResourceFile(None, path, mode, container_url=url, blob_prefix=file.get("blobPrefix"), source=source)


def output_files(spec: Mapping[str, Any]) -> tuple[OutputFile, ...]:
    return tuple(
        OutputFile(
            file_pattern=o["filePattern"],
            container_url=o["destination"]["container"]["containerUrl"],
            upload_condition=o["uploadOptions"]["uploadCondition"],
            path=o["destination"]["container"].get("path"),
            upload_headers=tuple(
                (h["name"], h.get("value") or "") for h in o["destination"]["container"].get("uploadHeaders") or ()
            ),
        )
        for o in spec.get("outputFiles") or ()
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
        resource_files=_resource_files(spec, where),
        output_files=output_files(spec),
        max_wall_clock_seconds=duration_seconds(spec["constraints"].get("maxWallClockTime")),
        slots=slots,
        ahead=ahead,
        packages=where.packages + where.task_packages(spec),
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
        resource_files=_resource_files(spec, where),
        max_wall_clock_seconds=duration_seconds(wall_clock),
        packages=where.packages,
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
        resource_files=_resource_files(spec, where),
        packages=where.packages,
        **_identity(spec, where),
    )


def deploy_step(step_id: str, where: Placement) -> Step:
    """The pool's application packages, extracted as the node comes up, before its start task: no command."""
    return Step(
        step_id=step_id,
        kind="deploy",
        node_root=where.node_root,
        task_dir=START_TASK_DIR,
        command_line="",
        packages=where.packages,
    )
