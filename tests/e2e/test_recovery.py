"""Nothing is lost: server restarts (SIGTERM and SIGKILL) and node workers that die mid-task."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest
from azure.batch import models

from kiln.cli.embedded import EmbeddedServer
from kiln.testing import (
    create_pool_and_wait,
    make_client,
    shell,
    wait_for,
    wait_tasks_completed,
)

JOB = "survivor"


def _start_work(client, marker_dir: Path, tasks: int = 4) -> None:
    """Tasks that wait for the test's go-ahead (marker_dir/go), then record their finished run in
    marker_dir (outside the node roots), so no run can finish while the server is down."""
    create_pool_and_wait(client, nodes=2, slots=1, pool_id="restart-pool")
    client.create_job(
        models.BatchJobCreateOptions(
            id=JOB,
            pool_info=models.BatchPoolInfo(pool_id="restart-pool"),
            job_preparation_task=models.BatchJobPreparationTask(command_line="/bin/true"),
        )
    )
    client.create_tasks(
        JOB,
        [
            models.BatchTaskCreateOptions(
                id=f"t{i}",
                command_line=shell(
                    f"while [ ! -e {marker_dir}/go ]; do sleep 0.1; done; echo done >> {marker_dir}/$AZ_BATCH_TASK_ID"
                ),
            )
            for i in range(tasks)
        ],
    )
    wait_for(lambda: sum(t.state == "running" for t in client.list_tasks(JOB)) == 2, 60, "two tasks running")


def _check_recovered(client, marker_dir: Path, tasks: int = 4) -> None:
    """The go-ahead comes once the requeued tasks run again: on restarted workers, which kill what
    their predecessors left running before they take work (the runs orphaned by a crash)."""
    assert client.get_pool("restart-pool").id == "restart-pool"
    assert client.get_job(JOB).state == "active"

    def rerunning() -> bool:
        listed = list(client.list_tasks(JOB))
        return (
            sum(t.state == "running" for t in listed) == 2 and sum(t.execution_info.requeue_count for t in listed) >= 2
        )

    wait_for(rerunning, 90, "the two requeued tasks to run again")
    _check_counts(client, {"active": tasks - 2, "running": 2})
    (marker_dir / "go").touch()
    done = wait_tasks_completed(client, JOB, timeout=120)
    _check_counts(client, {"completed": tasks, "succeeded": tasks})
    assert len(done) == tasks
    assert all(t.execution_info.result == "success" for t in done)
    assert sum(t.execution_info.requeue_count for t in done) >= 2  # the two that were running
    for i in range(tasks):  # every task finished exactly one run: nothing ran twice, nothing was lost
        assert (marker_dir / f"t{i}").read_text() == "done\n"


def _check_counts(client, expected: dict[str, int]) -> None:
    """taskcounts and taskslotcounts (counter rows the store keeps) agree with the listed tasks' states."""
    listed = list(client.list_tasks(JOB))
    recount = {state: sum(t.state == state for t in listed) for state in ("active", "running", "completed")}
    recount["succeeded"] = sum(t.execution_info.result == "success" for t in listed if t.state == "completed")
    recount["failed"] = sum(t.execution_info.result == "failure" for t in listed if t.state == "completed")
    counts = client.get_job_task_counts(JOB)
    for found in (counts.task_counts, counts.task_slot_counts):  # every task here takes one slot
        assert {name: getattr(found, name) for name in recount} == recount == {**dict.fromkeys(recount, 0), **expected}


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_restart_keeps_everything_and_requeues_running_tasks(open_tmp, marks_dir, how):
    data, markers = open_tmp / "data", marks_dir  # tasks are non-admin: they may write marks_dir (1777)
    server = EmbeddedServer(data).start()
    try:
        client = make_client(server)
        _start_work(client, markers)
        if how == "sigterm":
            assert server.stop() == 0  # a clean shutdown
        else:
            server.kill()
        server = EmbeddedServer(data, port=server.port).start()
        _check_recovered(make_client(server), markers)
    finally:
        server.stop()


def test_a_killed_node_worker_is_noticed_and_its_task_requeued(open_tmp, marks_dir):
    """SIGKILL the worker process that is a node: its task goes back to the queue and completes."""
    server = EmbeddedServer(open_tmp / "data").start()
    try:
        client = make_client(server)
        pool_id = create_pool_and_wait(client, nodes=1, pool_id="fragile")
        client.create_job(models.BatchJobCreateOptions(id="j", pool_info=models.BatchPoolInfo(pool_id=pool_id)))
        first_run = marks_dir / "first-run"  # written by the (non-admin) task
        client.create_task(
            "j",
            models.BatchTaskCreateOptions(
                id="victim",
                command_line=shell(f"if [ -e {first_run} ]; then exit 0; fi; echo $PPID > {first_run}; sleep 60"),
            ),
        )
        wait_for(lambda: first_run.exists() and first_run.read_text().strip(), 60, "the first run to start")
        launcher = int(first_run.read_text())  # the task's parent: the node's launcher, a child of its worker
        os.kill(psutil.Process(launcher).ppid(), signal.SIGKILL)
        task = wait_tasks_completed(client, "j", timeout=90)[0]
        assert task.execution_info.result == "success"
        assert task.execution_info.requeue_count == 1
        node = client.get_node(pool_id, task.node_info.node_id)
        assert node.state in ("idle", "running")
    finally:
        server.stop()
