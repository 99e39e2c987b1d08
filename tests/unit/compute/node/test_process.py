from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from kiln.compute.node import layout, process
from kiln.compute.node.process import CommandOutcome, exit_status, run_command
from kiln.compute.node.spawner import Spawner

from ..helpers import alive, eventually

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/home/somebody"}


@pytest.fixture
def paths(node_root: Path) -> layout.TaskPaths:
    paths = layout.task_paths(node_root, "workitems/j1/job-1/t1")
    layout.create_task_dir(paths)
    return paths


@pytest.fixture
def run(spawner: Spawner) -> Callable[..., Awaitable[CommandOutcome]]:
    async def run(paths: layout.TaskPaths, command: str, **kwargs: object) -> CommandOutcome:
        kwargs.setdefault("env", ENV)
        return await run_command(command, paths=paths, spawner=spawner, **kwargs)  # type: ignore[arg-type]

    return run


async def test_no_shell_no_expansion(run, paths: layout.TaskPaths) -> None:
    outcome = await run(paths, """echo $HOME 'a  b' "c" *""")
    assert outcome.exit_code == 0 and outcome.failure is None
    assert paths.stdout.read_text() == "$HOME a  b c *\n"
    assert paths.stderr.read_text() == ""


async def test_exit_codes_and_both_output_files(run, paths: layout.TaskPaths) -> None:
    outcome = await run(paths, "sh -c 'echo out; echo err >&2; exit 3'")
    assert outcome.exit_code == 3
    assert paths.stdout.read_text() == "out\n"
    assert paths.stderr.read_text() == "err\n"


async def test_cwd_is_wd_and_env_is_exactly_the_given_one(run, paths: layout.TaskPaths) -> None:
    await run(paths, "sh -c 'pwd; env | sort'")
    lines = paths.stdout.read_text().splitlines()
    assert lines[0] == str(paths.wd)
    assert [line.split("=")[0] for line in lines[1:] if line.split("=")[0] in ("HOME", "SECRET")] == ["HOME"]


async def test_output_files_are_new_files_never_links_followed(run, paths: layout.TaskPaths, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    paths.stdout.symlink_to(victim)
    assert (await run(paths, "echo out")).exit_code == 0
    assert not paths.stdout.is_symlink() and paths.stdout.read_text() == "out\n"
    assert victim.read_text() == "keep"


async def test_relative_program_resolves_against_wd(run, paths: layout.TaskPaths) -> None:
    script = paths.wd / "bin" / "hello.sh"
    script.parent.mkdir()
    script.write_text('#!/bin/sh\necho hello "$1"\n')
    script.chmod(0o755)
    outcome = await run(paths, "bin/hello.sh world")
    assert outcome.exit_code == 0
    assert paths.stdout.read_text() == "hello world\n"


@pytest.mark.parametrize("command", ["no-such-program-kiln", "./missing.sh", "/nonexistent/x", "", "'unbalanced"])
async def test_program_not_found(run, paths: layout.TaskPaths, command: str) -> None:
    outcome = await run(paths, command)
    assert outcome.exit_code is None
    assert outcome.failure is not None
    assert (outcome.failure["category"], outcome.failure["code"]) == ("usererror", "CommandProgramNotFound")


async def test_program_is_looked_up_on_the_steps_path(run, paths: layout.TaskPaths, tmp_path: Path) -> None:
    bindir = tmp_path / "mybin"
    bindir.mkdir()
    tool = bindir / "kiln-tool"
    tool.write_text("#!/bin/sh\necho tool\n")
    tool.chmod(0o755)
    outcome = await run(paths, "kiln-tool", env={**ENV, "PATH": f"{bindir}:/usr/bin:/bin"})
    assert outcome.exit_code == 0 and paths.stdout.read_text() == "tool\n"


def test_signal_exit_status_is_128_plus_the_signal() -> None:
    assert exit_status(-signal.SIGKILL) == 137
    assert exit_status(-signal.SIGTERM) == 143
    assert exit_status(0) == 0 and exit_status(2) == 2


async def test_killed_by_a_signal_reports_like_a_shell(run, paths: layout.TaskPaths) -> None:
    outcome = await run(paths, "sh -c 'kill -TERM $$'")
    assert outcome.exit_code == 143 and outcome.failure is None


TREE = "sh -c 'sleep 300 & echo $! > grandchild.pid; echo $$ > child.pid; wait'"


async def pids_of_tree(paths: layout.TaskPaths) -> tuple[int, int]:
    files = [paths.wd / "child.pid", paths.wd / "grandchild.pid"]
    await eventually(lambda: all(f.exists() and f.read_text().strip() for f in files), what="pid files")
    child, grandchild = (int(f.read_text()) for f in files)
    return child, grandchild


async def test_wall_clock_limit_kills_the_whole_tree(run, paths: layout.TaskPaths) -> None:
    task = asyncio.create_task(run(paths, TREE, timeout=1.0))
    child, grandchild = await pids_of_tree(paths)
    outcome = await task
    assert outcome.timed_out and not outcome.killed
    assert outcome.exit_code == 137
    assert outcome.failure is not None
    assert (outcome.failure["category"], outcome.failure["code"]) == ("usererror", "MaxWallClockTimeExceeded")
    await eventually(lambda: not alive(grandchild) and not alive(child), what="the tree to die")


async def test_a_kill_request_kills_the_whole_tree(run, paths: layout.TaskPaths) -> None:
    kill = process.KillSwitch()
    task = asyncio.create_task(run(paths, TREE, kill=kill))
    child, grandchild = await pids_of_tree(paths)
    kill.set()
    outcome = await task
    assert outcome.killed and not outcome.timed_out
    assert outcome.exit_code == 137 and outcome.failure is None
    await eventually(lambda: not alive(grandchild) and not alive(child), what="the tree to die")


async def test_cancelling_kills_the_tree(run, paths: layout.TaskPaths) -> None:
    task = asyncio.create_task(run(paths, TREE))
    _, grandchild = await pids_of_tree(paths)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await eventually(lambda: not alive(grandchild), what="the grandchild to die")


LEFTOVER = "sh -c 'sleep 300 & echo $! > grandchild.pid'"


async def test_background_leftovers_die_with_a_task(run, paths: layout.TaskPaths) -> None:
    outcome = await run(paths, LEFTOVER)
    assert outcome.exit_code == 0
    grandchild = int((paths.wd / "grandchild.pid").read_text())
    await eventually(lambda: not alive(grandchild), what="the leftover to die")


async def test_a_start_task_may_leave_daemons(run, paths: layout.TaskPaths) -> None:
    outcome = await run(paths, LEFTOVER, kill_leftovers=False)
    grandchild = int((paths.wd / "grandchild.pid").read_text())
    try:
        assert outcome.exit_code == 0 and alive(grandchild)
    finally:
        os.kill(grandchild, signal.SIGKILL)


#: One argument longer than the kernel's MAX_ARG_STRLEN (128 KiB): exec refuses it with E2BIG.
HUGE_WORD = "x" * (128 * 1024 + 1)


async def test_a_command_exec_refuses_fails_the_step_with_command_line_too_long(run, paths: layout.TaskPaths) -> None:
    outcome = await run(paths, "/bin/true", env={**ENV, "HUGE": HUGE_WORD})
    assert outcome.exit_code is None and outcome.failure is not None
    assert (outcome.failure["category"], outcome.failure["code"]) == ("usererror", "CommandLineTooLong")
    assert "Argument list too long" in outcome.failure["message"]


async def test_a_command_line_over_the_limit_is_refused_before_it_is_split(run, paths: layout.TaskPaths) -> None:
    outcome = await run(paths, "x" * (process.COMMAND_LINE_MAX + 1))  # one word: shlex would take seconds
    assert outcome.failure is not None and outcome.failure["code"] == "CommandLineTooLong"
