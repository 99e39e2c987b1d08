"""One step on a node: the ordered hooks around the command, and the StepResult they add up to."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

from kiln.compute.node import (
    blob_files,
    environment,
    identity,
    layout,
    output_files,
    packages,
    process,
    resource_files,
)
from kiln.compute.node.failures import SERVER_ERROR, StepFailure
from kiln.compute.node.spawner import Spawner
from kiln.compute.node.transfers import TransferLog
from kiln.compute.protocol import ResourceFile, Step, StepResult

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class StepContext:
    """What the hooks of one step share; each hook fills in its part."""

    step: Step
    paths: layout.TaskPaths
    spawner: Spawner
    env: dict[str, str] = field(default_factory=dict)
    #: the node's shared HTTP client, made on first use (None: a client per step)
    http: Callable[[], httpx.AsyncClient] | None = None
    kill: process.KillSwitch | None = None
    #: the unprivileged account the command runs as (None: the worker's own user)
    account: identity.Account | None = None
    #: the task directory and wd were made by this step (not a retry's, which their account has had)
    fresh_dirs: bool = False
    #: how the command ended (set before the poststop phase)
    outcome: process.CommandOutcome | None = None
    #: what the resource and output files moved, reported with the result
    transfers: TransferLog = field(default_factory=TransferLog)


Phase = Callable[[StepContext], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Hook:
    """A named part of a step's run; it implements only the phases it needs."""

    name: str
    prestart: Phase | None = None
    poststop: Phase | None = None


async def task_dir_hook(ctx: StepContext) -> None:
    try:
        layout.ensure_node_layout(ctx.paths.node_root)
        ctx.fresh_dirs = layout.create_task_dir(ctx.paths)
    except OSError as exc:
        raise StepFailure.of(
            SERVER_ERROR,
            "TaskDirectoryCreateFailed",
            f"Could not create the task directory {ctx.paths.task_dir}: {exc}",
        ) from None


async def identity_hook(ctx: StepContext) -> None:
    if identity.claims_uid(ctx.step, ctx.paths):  # in a thread: the uid registry's lock is host-wide
        ctx.account = await asyncio.to_thread(identity.prepare, ctx.step, ctx.paths, fresh=ctx.fresh_dirs)
    elif identity.needs_account(ctx.step):
        ctx.account = identity.prepare(ctx.step, ctx.paths, fresh=ctx.fresh_dirs)


async def environment_hook(ctx: StepContext) -> None:
    ctx.env = environment.build_environment(ctx.step, ctx.paths, account=ctx.account)


async def packages_hook(ctx: StepContext) -> None:
    if ctx.step.packages:
        ctx.env.update(await packages.deploy_all(ctx.paths.node_root, ctx.step.packages))


async def resource_files_hook(ctx: StepContext) -> None:
    if ctx.step.shared_files:  # they land in the task directory itself
        await fetch_into(ctx, dataclasses.replace(ctx.paths, wd=ctx.paths.task_dir), ctx.step.shared_files)
    if ctx.step.resource_files:
        if ctx.step.download_fault is not None:  # as if the blob store had answered with it
            raise _download_fault(ctx.step.resource_files[0], ctx.step.download_fault)
        await fetch_into(ctx, ctx.paths, ctx.step.resource_files)


def _download_fault(file: ResourceFile, status: int) -> StepFailure:
    """What the first resource file's download fails with when the blob store answers `status`."""
    if file.http_url is not None:
        return resource_files.http_failure(file, status)
    return blob_files.listing_failure(file, status)


async def fetch_into(ctx: StepContext, paths: layout.TaskPaths, files: tuple[ResourceFile, ...]) -> None:
    fetched = await resource_files.fetch_resource_files(
        paths, files, ctx.http() if ctx.http else None, log=ctx.transfers
    )
    if ctx.account is not None:  # a container's files are known once fetched
        placed = [f for f in files if f.http_url is not None] + [ResourceFile(None, path) for path in fetched]
        identity.hand_over_resource_files(paths, tuple(placed), ctx.account)


async def output_files_hook(ctx: StepContext) -> None:
    """After the command, before the step reports: a killed step (terminate, requeue) uploads nothing."""
    outcome = ctx.outcome
    if ctx.step.output_files and outcome is not None and not outcome.killed:
        await asyncio.to_thread(
            output_files.upload_all,
            ctx.step.output_files,
            outcome.exit_code,
            ctx.env,
            ctx.paths,
            ctx.account,
            ctx.transfers,
        )


#: The order matters: the directories must exist before anything is written into wd; on a retry the
#: account has owned them, so they are checked (no links) and handed over before the worker writes
#: into them again; the environment names those directories and the account; application packages add
#: their directories to it (their own variables win a clash); downloads come last because they are slow
#: and can fail.
HOOKS: tuple[Hook, ...] = (
    Hook("task_dir", prestart=task_dir_hook),
    Hook("identity", prestart=identity_hook),
    Hook("environment", prestart=environment_hook),
    Hook("packages", prestart=packages_hook),
    Hook("resource_files", prestart=resource_files_hook),
    Hook("output_files", poststop=output_files_hook),
)


async def run_phase(hooks: Sequence[Hook], phase: str, ctx: StepContext, *, stop_at_first: bool) -> None:
    """Setup (stop_at_first) raises the first StepFailure; teardown runs every hook, then raises an ExceptionGroup."""
    failures: list[StepFailure] = []
    for hook in hooks:
        run = getattr(hook, phase)
        if run is None:
            continue
        try:
            await run(ctx)
        except StepFailure as failed:
            if stop_at_first:
                raise
            failures.append(failed)
        except Exception as exc:  # a bug or an unexpected OS error: still a result, not a crash
            logger.exception("hook %s failed in %s for step %s", hook.name, phase, ctx.step.step_id)
            failure = StepFailure.of(SERVER_ERROR, "NodeAgentError", f"{hook.name} hook failed: {exc!r}")
            if stop_at_first:
                raise failure from exc
            failures.append(failure)
    if failures:
        raise ExceptionGroup(f"{phase} hooks failed", failures)


async def run_step(
    step: Step,
    *,
    spawner: Spawner,
    kill: process.KillSwitch | None = None,
    http: Callable[[], httpx.AsyncClient] | None = None,
    hooks: Sequence[Hook] = HOOKS,
    keep_group: Callable[[str, int], None] | None = None,
) -> StepResult:
    """keep_group(step_id, pgid): told the process group a keep_background step leaves behind."""
    start, started = time.time(), time.monotonic()
    if step.kind == "deploy":
        return await deploy_packages(step, start)
    try:
        paths = layout.task_paths(step.node_root, step.task_dir)
    except ValueError as exc:
        return StepResult(
            step.step_id,
            start,
            time.time(),
            None,
            failure=StepFailure.of(SERVER_ERROR, "TaskDirectoryCreateFailed", str(exc)).info,
        )
    ctx = StepContext(step, paths, spawner, http=http, kill=kill)
    try:
        await run_phase(hooks, "prestart", ctx, stop_at_first=True)
    except StepFailure as failed:  # what was downloaded before the failure moved all the same
        return StepResult(
            step.step_id, start, time.time(), None, failure=failed.info, transfers=ctx.transfers.to_message()
        )
    if kill is not None and kill.is_set():
        return StepResult(step.step_id, start, time.time(), None, killed=True)
    outcome = await run_command(ctx, started)
    if (
        step.keep_background
        and keep_group is not None
        and outcome.pid is not None
        and not (outcome.killed or outcome.timed_out)
    ):
        keep_group(step.step_id, outcome.pid)
    failure, upload_failed = outcome.failure, False
    ctx.outcome = outcome
    try:
        await run_phase(hooks, "poststop", ctx, stop_at_first=False)
    except ExceptionGroup as group:
        first = cast(StepFailure, group.exceptions[0])  # run_phase groups only these
        upload_failed = isinstance(first, output_files.UploadFailure)
        failure = first.info if upload_failed else failure or first.info  # an upload error ends the task
    return StepResult(
        step.step_id,
        start,
        time.time(),
        outcome.exit_code,
        failure=failure,
        timed_out=outcome.timed_out,
        usage=outcome.usage or None,
        killed=outcome.killed,
        upload_failed=upload_failed,
        transfers=ctx.transfers.to_message(),
    )


async def deploy_packages(step: Step, start: float) -> StepResult:
    """A node coming up extracts its pool's packages (into the node root, not a task directory); a failure
    is reported as the step's failureInfo, and the control plane marks the node unusable."""
    layout.ensure_node_layout(Path(step.node_root))  # its directories, secured, before any is written into
    try:
        await packages.deploy_all(Path(step.node_root), step.packages)
    except StepFailure as failed:
        return StepResult(step.step_id, start, time.time(), None, failure=failed.info)
    return StepResult(step.step_id, start, time.time(), 0)


async def run_command(ctx: StepContext, started: float) -> process.CommandOutcome:
    """The wall clock counts from the step's start, so setup time is part of it."""
    limit = ctx.step.max_wall_clock_seconds
    remaining = None if limit is None else max(0.0, limit - (time.monotonic() - started))
    return await process.run_command(
        ctx.step.command_line,
        env=ctx.env,
        paths=ctx.paths,
        spawner=ctx.spawner,
        timeout=remaining,
        limit=limit,
        kill=ctx.kill,
        kill_leftovers=ctx.step.kind != "start" and not ctx.step.keep_background,
        account=ctx.account,
    )
