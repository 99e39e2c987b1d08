from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from kiln.compute.node import identity, reaper

from ..helpers import alive, eventually


async def test_kills_only_the_processes_of_its_node_root(tmp_path: Path) -> None:
    mine, other = tmp_path / "node-a", tmp_path / "node-ab"
    procs = [
        subprocess.Popen(["sleep", "300"], env={"AZ_BATCH_NODE_ROOT_DIR": str(root)}, start_new_session=True)
        for root in (mine, other)
    ]
    try:
        assert reaper.node_processes(mine) == [procs[0].pid]
        assert reaper.kill_node_processes(mine) == [procs[0].pid]
        procs[0].wait(10)
        assert alive(procs[1].pid)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)
    await eventually(lambda: not reaper.node_processes(other), what="cleanup")


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to a task account needs root")
def test_kills_processes_running_under_task_accounts(node_root: Path) -> None:
    """The reaper runs as root: a command's switch to another uid does not hide it."""
    proc = subprocess.Popen(
        ["sleep", "300"],
        env={"AZ_BATCH_NODE_ROOT_DIR": str(node_root)},
        start_new_session=True,
        user=identity.UID_FIRST,
        group=identity.UID_FIRST,
        extra_groups=[],
    )
    try:
        assert reaper.kill_node_processes(node_root) == [proc.pid]
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait(10)


def test_kills_only_the_processes_of_one_task_directory(tmp_path: Path) -> None:
    """A kill-task fault: the other tasks of the node keep running."""
    root = tmp_path / "node"
    procs = [
        subprocess.Popen(
            ["sleep", "300"],
            env={"AZ_BATCH_NODE_ROOT_DIR": str(root), "AZ_BATCH_TASK_DIR": str(root / task)},
            start_new_session=True,
        )
        for task in ("workitems/j/job-1/t1", "workitems/j/job-1/t10")
    ]
    try:
        assert reaper.kill_node_processes(root, str(root / "workitems/j/job-1/t1")) == [procs[0].pid]
        assert procs[0].wait(10) == -signal.SIGKILL
        assert alive(procs[1].pid)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)
