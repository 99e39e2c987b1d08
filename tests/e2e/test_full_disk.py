"""A full disk needs no restart (issue 20.5): with the data dir's file system full, a write is either stored
(201) or refused with Batch's 503 ServerBusy body and not stored; tasks whose results could not be stored, and
tasks added meanwhile, all run to completion once space returns, in the same server process."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.batch import BatchClient, models
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from kiln.cli.embedded import EmbeddedServer
from kiln.testing import create_pool_and_wait, make_client, shell, wait_for

pytestmark = pytest.mark.root("mounts a tmpfs")


@pytest.fixture
def disk(open_tmp: Path) -> Iterator[Path]:
    """A small file system of its own for the data dir."""
    mount = open_tmp / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m,mode=755", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.fixture
def disk_server(disk: Path, open_tmp: Path) -> Iterator[EmbeddedServer]:
    server = EmbeddedServer(disk / "kiln", log_path=open_tmp / "server.log").start()
    yield server
    server.kill()


def fill(path: Path) -> None:
    """Write until the file system is full."""
    chunk = b"\0" * (1 << 20)
    with open(path, "wb", buffering=0) as filler:
        try:
            while True:
                filler.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    try:  # the last bytes a short write left
        with open(path, "ab", buffering=0) as filler:
            while True:
                filler.write(b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC


def add(client: BatchClient, job_id: str, task_id: str) -> int | str:
    """201, or the refusal's status and code."""
    try:
        client.create_task(job_id, models.BatchTaskCreateOptions(id=task_id, command_line="true"), retry_total=0)
    except HttpResponseError as refused:
        return f"{refused.status_code} {refused.error.code if refused.error else None}"
    return 201


def test_a_full_disk_refuses_what_it_cannot_store_and_heals_when_space_returns(
    disk: Path, disk_server: EmbeddedServer, marks_dir: Path
) -> None:
    client = make_client(disk_server)
    pool_id = create_pool_and_wait(client, nodes=1, slots=2)
    client.create_job(models.BatchJobCreateOptions(id="j", pool_info=models.BatchPoolInfo(pool_id=pool_id)))
    wait_go = shell(f"touch {marks_dir}/$AZ_BATCH_TASK_ID; until [ -e {marks_dir}/go ]; do sleep 0.05; done")
    client.create_tasks("j", [models.BatchTaskCreateOptions(id=f"early{n}", command_line=wait_go) for n in range(2)])
    wait_for(lambda: {"early0", "early1"} <= set(os.listdir(marks_dir)), 60, "the early tasks to run")

    fill(disk / "filler")
    answers = {f"t{n}": add(client, "j", f"t{n}") for n in range(30)}
    (marks_dir / "go").touch()  # the early tasks end while their results cannot be stored
    assert set(answers.values()) <= {201, "503 ServerBusy"}
    assert "503 ServerBusy" in answers.values()
    for task_id, answer in answers.items():
        if answer != 201:
            with pytest.raises(ResourceNotFoundError):
                client.get_task("j", task_id)

    (disk / "filler").unlink()
    accepted = {"early0", "early1"} | {task_id for task_id, answer in answers.items() if answer == 201}

    def all_done() -> bool:
        tasks = {t.id: t for t in client.list_tasks("j")}
        return set(tasks) == accepted and all(t.state == "completed" for t in tasks.values())

    wait_for(all_done, 120, "every stored task to complete after space returned")
    assert {t.id: t.execution_info.exit_code for t in client.list_tasks("j")} == dict.fromkeys(accepted, 0)
    # the early tasks' results waited in memory and were applied: nothing ran again
    assert {t.id: t.execution_info.requeue_count for t in client.list_tasks("j")} == dict.fromkeys(accepted, 0)
    assert disk_server.process is not None and disk_server.process.poll() is None  # no restart
