"""A pool's start task through the SDK: node states, startTaskInfo, retries, waitForSuccess, reruns."""

from __future__ import annotations

import os

import pytest
from azure.batch import models
from azure.core.exceptions import HttpResponseError

from kiln.testing import (
    node_operation_answers,
    pool_options,
    read_node_file,
    restart_node,
    shell,
    unique,
    wait_for,
    wait_tasks_completed,
)


def _pool_with_start_task(client, cleanup, start_task: models.BatchStartTask, nodes: int = 1, **extra) -> str:
    pool_id = unique("start")
    client.create_pool(pool_options(pool_id, target_dedicated_nodes=nodes, start_task=start_task, **extra))
    cleanup(pool=pool_id)
    return pool_id


def _settled_nodes(client, pool_id: str, states: set[str], count: int) -> list[models.BatchNode]:
    def settled():
        nodes = list(client.list_nodes(pool_id))
        return nodes if len(nodes) == count and all(n.state in states for n in nodes) else None

    return wait_for(settled, 120, f"{count} node(s) of {pool_id} in {states}")


def _run_job(client, cleanup, pool_id: str, command: str, count: int = 1) -> list[models.BatchTask]:
    job_id = unique("job")
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id)))
    cleanup(job=job_id)
    client.create_tasks(job_id, [models.BatchTaskCreateOptions(id=f"t{i}", command_line=command) for i in range(count)])
    return wait_tasks_completed(client, job_id)


def test_start_task_succeeds_then_node_is_idle_and_tasks_see_its_shared_file(client, cleanup):
    start = models.BatchStartTask(
        command_line=shell(
            'echo "started $GREETING" ; echo "to stderr" >&2;'
            " echo ready > $AZ_BATCH_NODE_SHARED_DIR/from-start.txt; pwd > $AZ_BATCH_NODE_STARTUP_DIR/where.txt"
        ),
        environment_settings=[models.EnvironmentSetting(name="GREETING", value="hello")],
        user_identity=models.UserIdentity(
            auto_user=models.AutoUserSpecification(scope="pool", elevation_level="admin")
        ),
    )
    pool_id = _pool_with_start_task(client, cleanup, start)
    (node,) = _settled_nodes(client, pool_id, {"idle"}, 1)
    info = node.start_task_info
    assert (info.state, info.exit_code, info.result, info.retry_count) == ("completed", 0, "success", 0)
    assert info.start_time <= info.end_time and info.last_retry_time is None and info.failure_info is None
    assert node.start_task.command_line == start.command_line and node.start_task.wait_for_success is True
    assert node.start_task.max_task_retry_count == 0
    assert read_node_file(client, pool_id, node.id, "startup/stdout.txt") == "started hello\n"
    assert read_node_file(client, pool_id, node.id, "startup/stderr.txt") == "to stderr\n"
    assert read_node_file(client, pool_id, node.id, "startup/where.txt").strip().endswith(f"{node.id}/startup/wd")
    (task,) = _run_job(client, cleanup, pool_id, shell("grep -x ready $AZ_BATCH_NODE_SHARED_DIR/from-start.txt"))
    assert task.execution_info.exit_code == 0
    assert client.get_pool(pool_id).start_task.command_line == start.command_line


def test_start_task_exit_3_with_retries_fails_the_node_and_tasks_go_elsewhere(client, cleanup, marks_dir):
    """The first node to claim the mark fails every run; the other succeeds."""
    mark = marks_dir / "failer"
    start = models.BatchStartTask(
        command_line=shell(
            f'(set -C; echo "$AZ_BATCH_NODE_ID" > {mark}) 2>/dev/null; echo run >> $AZ_BATCH_NODE_STARTUP_DIR/runs;'
            f' [ "$(cat {mark})" = "$AZ_BATCH_NODE_ID" ] && exit 3; exit 0'
        ),
        max_task_retry_count=2,
    )
    pool_id = _pool_with_start_task(client, cleanup, start, nodes=2)
    nodes = {n.state: n for n in _settled_nodes(client, pool_id, {"idle", "starttaskfailed"}, 2)}
    assert set(nodes) == {"idle", "starttaskfailed"}
    failed, good = nodes["starttaskfailed"], nodes["idle"]
    assert failed.id == mark.read_text().strip()
    info = failed.start_task_info
    assert (info.state, info.exit_code, info.result, info.retry_count) == ("completed", 3, "failure", 2)
    assert info.failure_info.category == "usererror" and info.last_retry_time is not None
    assert info.start_time <= info.end_time
    assert read_node_file(client, pool_id, failed.id, "startup/runs").split() == ["run"] * 3
    (error,) = failed.errors
    assert error.code == "StartTaskFailed" and "reboot or reimage" in error.message
    # reboot and reimage are the remedy; a deallocate or a start is refused
    assert node_operation_answers(client, pool_id, failed.id, "deallocate", "start") == {
        "deallocate": "NodeStateUnusable",
        "start": "NodeStateUnusable",
    }
    assert client.get_pool(pool_id).allocation_state == "steady"
    tasks = _run_job(client, cleanup, pool_id, "/bin/true", count=4)
    assert {t.node_info.node_id for t in tasks} == {good.id}


def test_without_wait_for_success_tasks_start_while_the_start_task_runs(client, cleanup, marks_dir):
    go = marks_dir / "go"
    start = models.BatchStartTask(
        command_line=shell(f"while [ ! -e {go} ]; do sleep 0.05; done; exit 5"), wait_for_success=False
    )
    pool_id = _pool_with_start_task(client, cleanup, start)
    (node,) = _settled_nodes(client, pool_id, {"idle"}, 1)
    assert node.start_task_info.state == "running" and node.start_task_info.end_time is None
    (task,) = _run_job(client, cleanup, pool_id, shell(f"touch {go}"))  # only a task can end the start task
    assert task.execution_info.exit_code == 0
    info = wait_for(
        lambda: (i := client.get_node(pool_id, node.id).start_task_info).state == "completed" and i, 60, "start ended"
    )
    assert (info.exit_code, info.result) == (5, "failure")
    node = client.get_node(pool_id, node.id)
    assert node.state == "idle" and not node.errors  # a failure does not hold the node back
    assert _run_job(client, cleanup, pool_id, "/bin/true")[0].execution_info.exit_code == 0


@pytest.mark.parametrize(
    ("restart", "boots"), [("reboot", ["v1", "v2"]), ("reimage", ["v2"])], ids=["reboot", "reimage"]
)
def test_start_task_reruns_after_reboot_or_reimage_and_a_pool_update_reaches_the_node_only_then(
    client, cleanup, restart, boots
):
    """A reimage also wipes the node's files (shared/ with them): only the run after it is left."""
    start = models.BatchStartTask(command_line=shell("echo v1 >> $AZ_BATCH_NODE_SHARED_DIR/boots"))
    pool_id = _pool_with_start_task(client, cleanup, start)
    (node,) = _settled_nodes(client, pool_id, {"idle"}, 1)
    changed = models.BatchStartTask(command_line=shell("echo v2 >> $AZ_BATCH_NODE_SHARED_DIR/boots"))
    client.update_pool(pool_id, models.BatchPoolUpdateOptions(start_task=changed))
    assert client.get_pool(pool_id).start_task.command_line == changed.command_line
    assert client.get_node(pool_id, node.id).start_task.command_line == start.command_line  # not yet
    restart_node(client, pool_id, node.id, restart).result()
    wait_for(lambda: client.get_node(pool_id, node.id).state == "idle", 120, "node back up")
    node = client.get_node(pool_id, node.id)
    assert node.start_task.command_line == changed.command_line
    assert node.start_task_info.retry_count == 0 and node.start_task_info.result == "success"
    assert read_node_file(client, pool_id, node.id, "shared/boots").split() == boots


def test_a_held_start_task_keeps_the_node_waitingforstarttask_which_refuses_node_operations(client, cleanup, marks_dir):
    go = marks_dir / "go"
    start = models.BatchStartTask(command_line=shell(f"while [ ! -e {go} ]; do sleep 0.05; done"))
    pool_id = _pool_with_start_task(client, cleanup, start)
    (node,) = _settled_nodes(client, pool_id, {"waitingforstarttask"}, 1)
    node = client.get_node(pool_id, node.id)
    assert node.state == "waitingforstarttask" and node.start_task_info.state == "running"
    assert node.start_task_info.end_time is None and node.start_task_info.exit_code is None
    operations = ("reboot", "reimage", "deallocate", "start")
    assert node_operation_answers(client, pool_id, node.id, *operations) == dict.fromkeys(
        operations, "NodeBeingStarted"
    )
    go.touch()
    (node,) = _settled_nodes(client, pool_id, {"idle"}, 1)
    assert (node.start_task_info.state, node.start_task_info.result) == ("completed", "success")


def test_a_start_task_with_unlimited_retries_runs_until_it_succeeds(client, cleanup):
    """maxTaskRetryCount -1: it fails twice (a counter in shared/), then succeeds on its third run."""
    start = models.BatchStartTask(
        command_line=shell(
            "n=$(cat $AZ_BATCH_NODE_SHARED_DIR/runs 2>/dev/null || echo 0); n=$((n + 1));"
            " echo $n > $AZ_BATCH_NODE_SHARED_DIR/runs; [ $n -ge 3 ]"
        ),
        max_task_retry_count=-1,
    )
    pool_id = _pool_with_start_task(client, cleanup, start)
    (node,) = _settled_nodes(client, pool_id, {"idle", "starttaskfailed"}, 1)
    assert node.state == "idle" and not node.errors
    assert node.start_task.max_task_retry_count == -1
    info = node.start_task_info
    assert (info.state, info.exit_code, info.result, info.retry_count) == ("completed", 0, "success", 2)
    assert info.last_retry_time is not None and info.failure_info is None
    assert read_node_file(client, pool_id, node.id, "shared/runs") == "3\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="accounts are switched only when the server runs as root")
@pytest.mark.parametrize(
    ("identity", "expected"),
    [
        # a non-admin pool auto-user: the node's account of its own, named after its uid
        (models.UserIdentity(auto_user=models.AutoUserSpecification(scope="pool", elevation_level="nonadmin")), None),
        # a named account of the pool, with the uid and gid it gives
        (models.UserIdentity(username="starter"), ["4711", "4712", "starter"]),
    ],
    ids=["nonadmin-auto-user", "named-account"],
)
def test_a_start_task_runs_as_its_user_identity(client, cleanup, identity, expected):
    start = models.BatchStartTask(command_line=shell("id -u; id -g; echo $USER"), user_identity=identity)
    account = models.UserAccount(
        name="starter", password="not-used", linux_user_configuration=models.LinuxUserConfiguration(uid=4711, gid=4712)
    )
    pool_id = _pool_with_start_task(client, cleanup, start, user_accounts=[account])
    (node,) = _settled_nodes(client, pool_id, {"idle"}, 1)
    uid, gid, user = read_node_file(client, pool_id, node.id, "startup/stdout.txt").split()
    if expected is None:
        assert uid not in ("0", "4711") and gid == uid and user == f"kiln-{uid}"
    else:
        assert [uid, gid, user] == expected
    assert node.start_task.user_identity.as_dict() == identity.as_dict()


def test_start_task_with_container_settings_is_refused(client):
    start = models.BatchStartTask(
        command_line="/bin/true", container_settings=models.BatchTaskContainerSettings(image_name="ubuntu")
    )
    with pytest.raises(HttpResponseError) as caught:
        client.create_pool(pool_options(unique("start"), target_dedicated_nodes=1, start_task=start))
    assert caught.value.status_code == 400
    assert any(d.message == "startTask.containerSettings" for d in caught.value.error.details)
