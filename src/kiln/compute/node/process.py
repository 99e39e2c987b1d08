"""The command: exec'd without a shell in its own process group, with a wall-clock limit and kill."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import shlex
import signal
from dataclasses import dataclass
from pathlib import Path

from kiln.compute.node.failures import (
    SERVER_ERROR,
    USER_ERROR,
    FailureInfo,
    failure_info,
)
from kiln.compute.node.identity import Account
from kiln.compute.node.layout import TaskPaths
from kiln.compute.node.lookup import find_program
from kiln.compute.node.spawner import LaunchedProcess, LauncherLost, Spawner

#: How long to wait for a SIGKILLed leader to be reaped before reporting anyway.
REAP_TIMEOUT = 10.0
#: The longest command line a node splits (the API's limit, wire.models.COMMAND_LINE_MAX): shlex takes time
#: quadratic in a word's length on the worker's event loop (two minutes for a 1 MB word), so a longer line
#: stored before that limit fails its task instead of stalling the node.
COMMAND_LINE_MAX = 32_768


class KillSwitch:
    """A request to kill one step, set at most once. An asyncio.Event would need a task per step to be
    waited for together with the command's exit; this is a future underneath."""

    def __init__(self) -> None:
        self.requested: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def set(self) -> None:
        if not self.requested.done():
            self.requested.set_result(None)

    def is_set(self) -> bool:
        return self.requested.done()


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """How the command ended. exit_code follows the shell: killed by signal N -> 128 + N."""

    exit_code: int | None
    failure: FailureInfo | None = None
    timed_out: bool = False
    killed: bool = False
    pid: int | None = None
    #: what the command's process tree used (spawner.LaunchedProcess.usage); None when it never ran
    usage: dict[str, float] | None = None


def exit_status(returncode: int) -> int:
    """asyncio reports death by signal N as -N; report 128 + N as a shell would (SIGKILL -> 137)."""
    return 128 - returncode if returncode < 0 else returncode


def launcher_lost(proc: LaunchedProcess) -> CommandOutcome:
    kill_group(proc.pid)
    return CommandOutcome(
        None,
        failure_info(
            SERVER_ERROR, "NodeAgentError", "The node's launcher stopped while the command ran; its exit is unknown."
        ),
        pid=proc.pid,
    )


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def not_found(message: str) -> CommandOutcome:
    return CommandOutcome(None, failure_info(USER_ERROR, "CommandProgramNotFound", message))


def too_long(message: str) -> CommandOutcome:
    return CommandOutcome(None, failure_info(USER_ERROR, "CommandLineTooLong", message))


def launch_failed(program: str, exc: OSError) -> CommandOutcome:
    """The launcher could not start the command (exec failed): the step fails, the node goes on."""
    reason = exc.strerror or str(exc)
    if exc.errno == errno.E2BIG:
        return too_long(
            f"The program {program!r} could not be started: {reason}. Each argument and environment variable "
            "must be shorter than 128 KiB, and all of them together shorter than the node's ARG_MAX."
        )
    return not_found(f"The program {program!r} could not be started: {reason}")


@functools.lru_cache(maxsize=1024)  # a job's tasks often share their command line
def _split(command_line: str) -> tuple[str, ...]:
    return tuple(shlex.split(command_line))


def prepare_argv(
    command_line: str, env: dict[str, str], wd: Path, account: Account | None = None
) -> list[str] | CommandOutcome:
    """Split with POSIX quoting, no expansion; a program that cannot be found is a user error."""
    if len(command_line) > COMMAND_LINE_MAX:
        return too_long(f"The command line has {len(command_line)} characters; at most {COMMAND_LINE_MAX} may run.")
    try:
        argv = list(_split(command_line))
    except ValueError as exc:
        return not_found(f"The command line could not be parsed: {exc}")
    if not argv:
        return not_found("The command line is empty.")
    program = find_program(argv[0], env.get("PATH", ""), wd, account)
    if program is None:
        by = " by the task's account" if account is not None else ""
        return not_found(f"The program {argv[0]!r} was not found or is not executable{by}.")
    return [program, *argv[1:]]


async def run_command(
    command_line: str,
    *,
    env: dict[str, str],
    paths: TaskPaths,
    spawner: Spawner,
    timeout: float | None = None,
    limit: float | None = None,
    kill: KillSwitch | None = None,
    kill_leftovers: bool = True,
    account: Account | None = None,
) -> CommandOutcome:
    """Run to completion, timeout or kill. Cancelling this coroutine kills the group too.

    timeout: seconds left of the wall clock; limit: the whole limit, for the message.

    spawner: the node's launcher starts the command (see launcher.py for why).
    account: run as this unprivileged account (None: as the worker). The worker, root then, can
    still signal the group.

    kill_leftovers: after the main process exits, SIGKILL what is left in its group
    (background children); a start task keeps them, so it can launch daemons.
    """
    argv = prepare_argv(command_line, env, paths.wd, account)
    if isinstance(argv, CommandOutcome):
        return argv
    try:
        proc = await spawn(spawner, argv, env, paths, account)
    except OSError as exc:
        return launch_failed(argv[0], exc)
    try:
        outcome = await wait(proc, timeout, kill, limit)
    except BaseException:
        kill_group(proc.pid)  # cancelled (agent closing): leave no orphans behind
        raise
    if kill_leftovers or outcome.timed_out or outcome.killed:
        kill_group(proc.pid)
    return outcome


_devnull: int | None = None


def devnull() -> int:
    """One read-only /dev/null for every command's stdin (instead of an open per command)."""
    global _devnull
    if _devnull is None:
        _devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    return _devnull


OUTPUT_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def open_output(path: Path, account: Account | None) -> int:
    """A new file each run (not O_TRUNC): a link left in the task directory by its account must not
    make the worker truncate, or hand over, a file elsewhere. Only a retry finds one to unlink."""
    try:
        fd = os.open(path, OUTPUT_FLAGS, 0o660)
    except FileExistsError:
        os.unlink(path)
        fd = os.open(path, OUTPUT_FLAGS, 0o660)
    if account is not None:
        os.fchown(fd, account.uid, account.gid)
    return fd


async def spawn(
    spawner: Spawner, argv: list[str], env: dict[str, str], paths: TaskPaths, account: Account | None = None
) -> LaunchedProcess:
    """stdout/stderr go straight to the files by descriptor, never through Python."""
    out = open_output(paths.stdout, account)
    try:
        err = open_output(paths.stderr, account)
        try:
            return await spawner.spawn(argv, env=env, cwd=str(paths.wd), stdio=(devnull(), out, err), account=account)
        finally:
            os.close(err)
    finally:
        os.close(out)


async def wait(
    proc: LaunchedProcess, timeout: float | None, kill: KillSwitch | None, limit: float | None = None
) -> CommandOutcome:
    exited = proc.exited  # futures both: no task of their own to wait for them
    killed = kill.requested if kill is not None else None
    waits: set[asyncio.Future[int] | asyncio.Future[None]] = {exited} if killed is None else {exited, killed}
    done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    if exited in done:
        if exited.exception() is not None:
            return launcher_lost(proc)
        return CommandOutcome(exit_status(exited.result()), pid=proc.pid, usage=proc.usage)
    kill_group(proc.pid)
    try:
        code = exit_status(await asyncio.wait_for(asyncio.shield(exited), REAP_TIMEOUT))
    except TimeoutError:
        code = 128 + signal.SIGKILL
    except LauncherLost:
        return launcher_lost(proc)
    if killed is not None and killed in done:
        return CommandOutcome(code, killed=True, pid=proc.pid, usage=proc.usage)
    return CommandOutcome(
        code,
        failure_info(
            USER_ERROR,
            "MaxWallClockTimeExceeded",
            f"The task exceeded its maximum wall clock time of {limit or timeout:g} seconds and was killed.",
        ),
        timed_out=True,
        pid=proc.pid,
        usage=proc.usage,
    )
