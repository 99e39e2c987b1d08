from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from kiln.compute.node import process, runner
from kiln.compute.node.failures import StepFailure
from kiln.compute.node.spawner import Spawner
from kiln.compute.protocol import ResourceFile, Step

from ..helpers import FileServer


async def test_a_step_runs_its_hooks_in_order(
    run_step, make_step: Callable[..., Step], node_root: Path, file_server: FileServer
) -> None:
    file_server.files = {"/in.txt": b"payload"}
    step = make_step(
        "cat in.txt",
        task_dir="workitems/j1/job-1/t1",
        resource_files=(ResourceFile(file_server.url("/in.txt"), "in.txt"),),
    )
    result = await run_step(step)
    assert (result.step_id, result.exit_code, result.failure) == (step.step_id, 0, None)
    assert result.start_time <= result.end_time
    (moved,) = result.transfers or []  # what the resource files moved, without the URL's query
    assert moved["direction"] == "download" and moved["source"] == file_server.url("/in.txt").split("?")[0]
    assert (moved["files"], moved["bytes"]) == (1, len(b"payload")) and moved["seconds"] >= 0
    assert (node_root / "workitems/j1/job-1/t1/stdout.txt").read_text() == "payload"
    assert sorted(p.name for p in node_root.iterdir()) == [
        "applications",
        "fsmounts",
        "shared",
        "startup",
        "volatile",
        "workitems",
    ]


async def test_setup_stops_at_the_first_failure(
    run_step, make_step: Callable[..., Step], node_root: Path, file_server: FileServer
) -> None:
    step = make_step(
        "/bin/true", task_dir="workitems/j1/job-1/t1", resource_files=(ResourceFile(file_server.url("/missing"), "m"),)
    )
    result = await run_step(step)
    assert result.exit_code is None
    assert result.failure is not None and result.failure["code"] == "BlobNotFound"
    assert result.transfers is None  # nothing moved
    assert not (node_root / "workitems/j1/job-1/t1/stdout.txt").exists()  # the command never ran


async def test_program_not_found_is_a_result(run_step, make_step: Callable[..., Step]) -> None:
    result = await run_step(make_step("no-such-program-kiln"))
    assert result.transfers is None
    assert result.exit_code is None and result.failure is not None
    assert result.failure["code"] == "CommandProgramNotFound"


async def test_wall_clock_counts_from_the_start_of_the_step(run_step, make_step: Callable[..., Step]) -> None:
    result = await run_step(make_step("sleep 30", max_wall_clock_seconds=0.3))
    assert result.timed_out and result.exit_code == 137
    assert result.failure is not None and result.failure["code"] == "MaxWallClockTimeExceeded"


async def test_a_kill_before_the_command_skips_it(run_step, make_step: Callable[..., Step]) -> None:
    kill = process.KillSwitch()
    kill.set()
    result = await run_step(make_step(), kill=kill)
    assert result.killed and result.exit_code is None


async def test_a_bad_task_dir_is_a_result(run_step, make_step: Callable[..., Step]) -> None:
    result = await run_step(make_step(task_dir="../outside"))
    assert result.failure is not None and result.failure["category"] == "servererror"


def hook(name: str, log: list[str], fail: bool = False, crash: bool = False) -> runner.Hook:
    async def phase(ctx: runner.StepContext) -> None:
        log.append(name)
        if fail:
            raise StepFailure.of("usererror", f"{name}Failed", name)
        if crash:
            raise RuntimeError(name)

    return runner.Hook(name, prestart=phase, poststop=phase)


@pytest.fixture
def ctx(make_step: Callable[..., Step], spawner: Spawner) -> runner.StepContext:
    step = make_step()
    return runner.StepContext(step, runner.layout.task_paths(step.node_root, step.task_dir), spawner)


async def test_run_phase_setup_stops_at_the_first_failure(ctx: runner.StepContext) -> None:
    log: list[str] = []
    hooks = [hook("a", log), hook("b", log, fail=True), hook("c", log)]
    with pytest.raises(StepFailure) as failure:
        await runner.run_phase(hooks, "prestart", ctx, stop_at_first=True)
    assert log == ["a", "b"] and failure.value.info["code"] == "bFailed"


async def test_run_phase_teardown_runs_every_hook(ctx: runner.StepContext) -> None:
    log: list[str] = []
    hooks = [hook("a", log, fail=True), hook("b", log, crash=True), hook("c", log)]
    with pytest.raises(ExceptionGroup) as group:
        await runner.run_phase(hooks, "poststop", ctx, stop_at_first=False)
    assert log == ["a", "b", "c"]
    assert [e.info["code"] for e in group.value.exceptions] == ["aFailed", "NodeAgentError"]


async def test_run_phase_skips_hooks_without_the_phase(ctx: runner.StepContext) -> None:
    await runner.run_phase([runner.Hook("none")], "prestart", ctx, stop_at_first=True)


@pytest.mark.parametrize(
    ("file", "status", "category", "code"),
    [
        (
            ResourceFile("http://blobs.example/c/in.txt?sig=secret", "in.txt"),
            500,
            "servererror",
            "BlobDownloadMiscError",
        ),
        (
            ResourceFile(None, "d", container_url="http://blobs.example/c?sig=secret"),
            404,
            "usererror",
            "ResourceContainerNotFound",
        ),
        (
            ResourceFile(None, "d", container_url="http://blobs.example/c?sig=secret"),
            403,
            "usererror",
            "ResourceContainerAccessDenied",
        ),
    ],
)
async def test_a_download_fault_fails_the_first_file_as_that_answer_from_the_blob_store_would(
    run_step, make_step: Callable[..., Step], node_root: Path, file, status: int, category: str, code: str
) -> None:
    step = make_step("/bin/true", task_dir="workitems/j1/job-1/t1", resource_files=(file,), download_fault=status)
    result = await run_step(step)
    assert result.exit_code is None and result.failure is not None
    assert (result.failure["category"], result.failure["code"]) == (category, code)
    assert f"HTTP {status}" in result.failure["message"] and "secret" not in result.failure["message"]
    assert not (node_root / "workitems/j1/job-1/t1/stdout.txt").exists()  # the command never ran
