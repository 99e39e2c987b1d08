"""Node scheduling, removing nodes and stopping a resize, through the SDK."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from azure.batch import models
from azure.batch.models._models import BatchNodeDeallocateOptions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient

from kiln.testing import create_pool_and_wait, node_operation_answers, restart_node, shell, unique, wait_for
from kiln.testing_azurite import container_sas_url


def _job(client, cleanup, pool_id: str) -> str:
    job_id = unique("job")
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id)))
    cleanup(job=job_id)
    return job_id


def _held(marks: Path, name: str) -> str:
    """A task that says it started, then runs until the test lets it go."""
    return shell(f"touch {marks}/{name}.started; while [ ! -e {marks}/{name}.go ]; do sleep 0.05; done")


def _started(client, job_id: str, task_id: str, marks: Path) -> models.BatchTask:
    wait_for(lambda: (marks / f"{task_id}.started").exists(), 60, f"{task_id} started")
    return client.get_task(job_id, task_id)


def _task_a_running(client, cleanup, marks: Path, nodes: int) -> tuple[str, str, str]:
    """A new pool and job with task `a` running (held): (pool, job, the node it runs on)."""
    pool_id = create_pool_and_wait(client, nodes=nodes)
    cleanup(pool=pool_id)
    job_id = _job(client, cleanup, pool_id)
    client.create_task(job_id, models.BatchTaskCreateOptions(id="a", command_line=_held(marks, "a")))
    return pool_id, job_id, _started(client, job_id, "a", marks).node_info.node_id


def _node_state(client, pool_id: str, node_id: str, state: str) -> None:
    wait_for(lambda: client.get_node(pool_id, node_id).state == state, 60, f"node {node_id} {state}")


def _task_state(client, job_id: str, task_id: str, state: str) -> models.BatchTask:
    return wait_for(lambda: (t := client.get_task(job_id, task_id)).state == state and t, 60, f"task {task_id} {state}")


def _disable(client, pool_id: str, node_id: str, option: str) -> None:
    options = models.BatchNodeDisableSchedulingOptions(node_disable_scheduling_option=option)
    client.disable_node_scheduling(pool_id, node_id, options)


def test_disable_scheduling_taskcompletion_lets_the_task_finish_then_the_node_is_offline(client, cleanup, marks_dir):
    pool_id, job_id, node_id = _task_a_running(client, cleanup, marks_dir, nodes=1)
    _disable(client, pool_id, node_id, "taskcompletion")
    node = client.get_node(pool_id, node_id)
    assert (node.state, node.scheduling_state) == ("running", "disabled")
    with pytest.raises(ResourceExistsError) as caught:
        _disable(client, pool_id, node_id, "requeue")
    assert caught.value.error.code == "NodeAlreadyInTargetSchedulingState"
    client.create_task(job_id, models.BatchTaskCreateOptions(id="b", command_line="/bin/true"))
    (marks_dir / "a.go").touch()
    assert _task_state(client, job_id, "a", "completed").execution_info.exit_code == 0
    _node_state(client, pool_id, node_id, "offline")
    assert client.get_task(job_id, "b").state == "active"  # nothing new starts on an offline node
    client.enable_node_scheduling(pool_id, node_id)
    assert _task_state(client, job_id, "b", "completed").execution_info.exit_code == 0
    _node_state(client, pool_id, node_id, "idle")
    with pytest.raises(ResourceExistsError) as caught:
        client.enable_node_scheduling(pool_id, node_id)
    assert caught.value.error.code == "NodeAlreadyInTargetSchedulingState"


@pytest.mark.parametrize("option", ["requeue", "terminate"])
def test_disable_scheduling_requeues_or_terminates_the_running_task(client, cleanup, marks_dir, option):
    pool_id, job_id, node_id = _task_a_running(client, cleanup, marks_dir, nodes=1)
    _disable(client, pool_id, node_id, option)
    _node_state(client, pool_id, node_id, "offline")
    task = client.get_task(job_id, "a")
    if option == "terminate":
        assert task.state == "completed" and task.execution_info.failure_info.code == "TaskEnded"
        return
    assert task.state == "active" and task.execution_info.requeue_count == 1 and task.execution_info.retry_count == 0
    (marks_dir / "a.started").unlink()
    (marks_dir / "a.go").touch()
    client.enable_node_scheduling(pool_id, node_id)
    assert _task_state(client, job_id, "a", "completed").execution_info.exit_code == 0


@pytest.mark.parametrize("option", ["requeue", "terminate", "taskcompletion", "retaineddata"])
def test_remove_nodes_with_each_deallocation_option(client, cleanup, marks_dir, option):
    """retaineddata waits for the node's tasks as taskcompletion does (a local node retains no data apart)."""
    pool_id, job_id, node_id = _task_a_running(client, cleanup, marks_dir, nodes=2)
    (marks_dir / "a.started").unlink()
    if option in ("taskcompletion", "retaineddata"):
        (marks_dir / "a.go").touch()  # it ends on its own, on the node being removed
    removal = models.BatchNodeRemoveOptions(node_ids=[node_id], node_deallocation_option=option)
    client.begin_remove_nodes(pool_id, removal, polling_interval=1).result()
    pool = client.get_pool(pool_id)
    assert (pool.allocation_state, pool.target_dedicated_nodes, pool.current_dedicated_nodes) == ("steady", 1, 1)
    assert node_id not in {n.id for n in client.list_nodes(pool_id)}
    if option == "terminate":
        task = client.get_task(job_id, "a")
        assert task.state == "completed" and task.execution_info.failure_info.code == "TaskEnded"
        return
    (marks_dir / "a.go").touch()
    task = _task_state(client, job_id, "a", "completed")
    assert task.execution_info.exit_code == 0
    if option == "requeue":
        assert task.execution_info.requeue_count == 1 and task.node_info.node_id != node_id
    else:
        assert task.execution_info.requeue_count == 0 and task.node_info.node_id == node_id


@pytest.mark.parametrize("option", ["requeue", "terminate", "taskcompletion"])
def test_resize_down_with_each_deallocation_option(client, cleanup, marks_dir, option):
    """The pool's only node runs task `a` when a resize to 0 takes it: the option says what becomes of `a`."""
    pool_id, job_id, node_id = _task_a_running(client, cleanup, marks_dir, nodes=1)
    resize = models.BatchPoolResizeOptions(target_dedicated_nodes=0, node_deallocation_option=option)
    poller = client.begin_resize_pool(pool_id, resize, polling_interval=1)
    if option == "taskcompletion":  # the node stays until `a` has ended, and the pool resizing with it
        assert client.get_pool(pool_id).allocation_state == "resizing"
        assert [n.id for n in client.list_nodes(pool_id)] == [node_id]
        assert client.get_task(job_id, "a").state == "running"
        (marks_dir / "a.go").touch()
    poller.result()
    pool = client.get_pool(pool_id)
    assert (pool.allocation_state, pool.target_dedicated_nodes, pool.current_dedicated_nodes) == ("steady", 0, 0)
    assert list(client.list_nodes(pool_id)) == []
    task = client.get_task(job_id, "a")
    info = task.execution_info
    if option == "requeue":  # back in the queue, with no node to run on
        assert (task.state, info.requeue_count, info.retry_count) == ("active", 1, 0)
    elif option == "terminate":
        assert task.state == "completed" and info.failure_info.code == "TaskEnded"
    else:
        assert (task.state, info.exit_code, info.requeue_count) == ("completed", 0, 0)
        assert task.node_info.node_id == node_id


def test_remove_nodes_refuses_what_azure_refuses(client, pool):
    node_id = next(iter(client.list_nodes(pool))).id
    with pytest.raises(HttpResponseError) as caught:
        client.begin_remove_nodes(pool, models.BatchNodeRemoveOptions(node_ids=[node_id] * 101)).result()
    assert caught.value.status_code == 400
    assert any(d.message == "nodeList" for d in caught.value.error.details)
    with pytest.raises(ResourceNotFoundError) as caught:
        client.begin_remove_nodes(pool, models.BatchNodeRemoveOptions(node_ids=["no-such-node"])).result()
    assert caught.value.error.code == "NodeNotFound"
    with pytest.raises(HttpResponseError) as caught:
        removal = models.BatchNodeRemoveOptions(node_ids=[node_id], node_deallocation_option="later")
        client.begin_remove_nodes(pool, removal).result()
    assert caught.value.status_code == 400
    assert len(list(client.list_nodes(pool))) == 2


def test_stop_resize_settles_the_pool_at_the_nodes_it_has(client, cleanup):
    pool_id = create_pool_and_wait(client, nodes=1)
    cleanup(pool=pool_id)
    node_id = next(iter(client.list_nodes(pool_id))).id  # read before the resize: no list of its nodes between
    # light nodes start in milliseconds, a hundred in well under a second: a resize by 300 keeps the pool resizing
    # long enough to be caught at it by the very next request (one by 100 was over before it once, with arrivals
    # batched; a list of the growing pool's nodes in between let a quiet machine finish all 300 once)
    client.begin_resize_pool(pool_id, models.BatchPoolResizeOptions(target_dedicated_nodes=300), polling_interval=1)
    with pytest.raises(ResourceExistsError) as caught:  # a resizing pool cannot remove nodes
        client.begin_remove_nodes(pool_id, models.BatchNodeRemoveOptions(node_ids=[node_id])).result()
    assert caught.value.error.code == "PoolBeingResized"
    client.begin_stop_pool_resize(pool_id, polling_interval=1).result()
    pool = client.get_pool(pool_id)
    nodes = list(client.list_nodes(pool_id))
    assert pool.allocation_state == "steady" and pool.current_dedicated_nodes == len(nodes)
    assert 1 <= len(nodes) <= 300 and all(n.state == "idle" for n in nodes)
    # short of the target, the pool says so as Azure does (resizeErrors); had all of them come, nothing is short
    assert [e.code for e in pool.resize_errors or ()] == (["ResizeStopped"] if len(nodes) < 300 else [])
    client.begin_stop_pool_resize(pool_id, polling_interval=1).result()  # a steady pool stays as it is
    assert client.get_pool(pool_id).allocation_state == "steady"
    client.begin_resize_pool(pool_id, models.BatchPoolResizeOptions(target_dedicated_nodes=1), polling_interval=1)
    wait_for(lambda: client.get_pool(pool_id).allocation_state == "steady", 120, "the pool back at one node")
    assert client.get_pool(pool_id).resize_errors is None  # a new resize clears them


def test_deallocate_then_start_a_node(client, cleanup, marks_dir):
    start = models.BatchStartTask(command_line=shell(f"echo boot >> {marks_dir}/boots-$AZ_BATCH_NODE_ID"))
    pool_id = create_pool_and_wait(client, nodes=1, start_task=start)
    cleanup(pool=pool_id)
    (node,) = client.list_nodes(pool_id)
    with pytest.raises(ResourceExistsError) as caught:  # only a deallocated node starts
        client.begin_start_node(pool_id, node.id, polling_interval=1).result()
    assert caught.value.error.code == "OperationNotValidOnNode"
    options = BatchNodeDeallocateOptions(node_deallocate_option="requeue")
    client.begin_deallocate_node(pool_id, node.id, options, polling_interval=1).result()
    _node_state(client, pool_id, node.id, "deallocated")
    assert client.get_pool(pool_id).allocation_state == "steady"
    assert node_operation_answers(client, pool_id, node.id, "reboot", "reimage", "deallocate") == dict.fromkeys(
        ("reboot", "reimage", "deallocate"), "OperationNotValidOnNode"
    )
    job_id = _job(client, cleanup, pool_id)
    client.create_task(job_id, models.BatchTaskCreateOptions(id="a", command_line="/bin/true"))
    assert client.get_task(job_id, "a").state == "active"  # no node to run on
    client.begin_start_node(pool_id, node.id, polling_interval=1).result()
    assert _task_state(client, job_id, "a", "completed").execution_info.exit_code == 0
    _node_state(client, pool_id, node.id, "idle")
    assert (marks_dir / f"boots-{node.id}").read_text().split() == ["boot", "boot"]  # the start task ran again


def test_deallocate_with_taskcompletion_is_deallocating_until_the_task_ends(client, cleanup, marks_dir):
    pool_id, job_id, node_id = _task_a_running(client, cleanup, marks_dir, nodes=1)
    options = BatchNodeDeallocateOptions(node_deallocate_option="taskcompletion")
    poller = client.begin_deallocate_node(pool_id, node_id, options, polling_interval=1)
    assert client.get_node(pool_id, node_id).state == "deallocating"
    assert client.get_task(job_id, "a").state == "running"
    operations = ("reboot", "reimage", "deallocate", "start")
    assert node_operation_answers(client, pool_id, node_id, *operations) == dict.fromkeys(
        operations, "OperationNotValidOnNode"
    )
    (marks_dir / "a.go").touch()
    poller.result()
    task = _task_state(client, job_id, "a", "completed")
    assert (task.execution_info.exit_code, task.execution_info.requeue_count) == (0, 0)
    _node_state(client, pool_id, node_id, "deallocated")


@pytest.mark.parametrize(
    ("kind", "state", "code"),
    [("reboot", "rebooting", "NodeBeingRebooted"), ("reimage", "reimaging", "NodeBeingReimaged")],
)
def test_a_rebooting_or_reimaging_node_refuses_node_operations(client, cleanup, marks_dir, kind, state, code):
    """With taskcompletion the node is rebooting (reimaging) at once, and stays so while task `a` runs."""
    pool_id, job_id, node_id = _task_a_running(client, cleanup, marks_dir, nodes=1)
    poller = restart_node(client, pool_id, node_id, kind, "taskcompletion")
    assert client.get_node(pool_id, node_id).state == state
    operations = ("reboot", "reimage", "deallocate", "start")
    assert node_operation_answers(client, pool_id, node_id, *operations) == dict.fromkeys(operations, code)
    (marks_dir / "a.go").touch()
    poller.result()
    task = _task_state(client, job_id, "a", "completed")
    assert (task.execution_info.exit_code, task.execution_info.requeue_count) == (0, 0)
    _node_state(client, pool_id, node_id, "idle")


def test_extensions_users_and_remote_login_on_a_local_node(client, pool):
    node_id = next(iter(client.list_nodes(pool))).id
    assert list(client.list_node_extensions(pool, node_id)) == []
    with pytest.raises(ResourceNotFoundError):
        client.get_node_extension(pool, node_id, "secretext")
    user = models.BatchNodeUserCreateOptions(name="someone", password="s3cret!", is_admin=False)
    for call in (
        lambda: client.create_node_user(pool, node_id, user),
        lambda: client.replace_node_user(pool, node_id, "someone", models.BatchNodeUserReplaceOptions(password="x")),
        lambda: client.delete_node_user(pool, node_id, "someone"),
        lambda: client.get_node_remote_login_settings(pool, node_id),
    ):
        with pytest.raises(ResourceExistsError) as caught:
            call()
        assert caught.value.error.code == "OperationNotValidOnNode"
        assert "not virtual machines" in caught.value.error.message
    with pytest.raises(ResourceNotFoundError):
        client.list_node_extensions(pool, "no-such-node").next()


def _log_container(azurite) -> tuple[BlobServiceClient, str, str]:
    """(the service, a new container's name, its URL with a SAS that lets Kiln write there)."""
    blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
    name = unique("logs")
    blobs.create_container(name)
    return blobs, name, container_sas_url(blobs.url, name, write=True, create=True)


def test_each_node_of_a_pool_arrives_under_its_own_stimulus(client, cleanup, azurite):
    """A dozen nodes answer at once, and their arrivals are applied in batches (scheduler.batching): each node's
    log still says its own arrival caused its `idle`."""
    pool_id = create_pool_and_wait(client, nodes=12)
    cleanup(pool=pool_id)
    blobs, name, container = _log_container(azurite)
    options = models.UploadBatchServiceLogsOptions(
        container_url=container, start_time=datetime.now(UTC) - timedelta(hours=1)
    )
    for node in client.list_nodes(pool_id):
        uploaded = client.upload_node_logs(pool_id, node.id, options)
        log = blobs.get_blob_client(name, f"{uploaded.virtual_directory_name}/kiln-node.log").download_blob().readall()
        assert f"starting -> idle (node {node.id} up)" in log.decode()


def test_upload_batch_service_logs_puts_the_nodes_log_into_the_container(client, pool, azurite):
    blobs, name, container = _log_container(azurite)
    sas = container.split("?", 1)[1]
    node_id = next(iter(client.list_nodes(pool))).id
    since = datetime.now(UTC) - timedelta(hours=1)
    result = client.upload_node_logs(
        pool, node_id, models.UploadBatchServiceLogsOptions(container_url=container, start_time=since)
    )
    assert result.number_of_files_uploaded == 1 and node_id in result.virtual_directory_name
    (blob,) = blobs.get_container_client(name).list_blobs()
    assert blob.name == f"{result.virtual_directory_name}/kiln-node.log" and blob.blob_type == "BlockBlob"
    assert blob.content_settings.content_type == "text/plain; charset=utf-8"
    log = blobs.get_blob_client(name, blob.name).download_blob().readall().decode()
    assert "-> idle" in log  # the node's own transitions, with their causes
    read_only = container_sas_url(blobs.url, name, read=True)
    for refused in (read_only, f"http://127.0.0.1:1/{name}?{sas}"):  # no write permission; nothing listens there
        with pytest.raises(HttpResponseError) as caught:
            client.upload_node_logs(
                pool, node_id, models.UploadBatchServiceLogsOptions(container_url=refused, start_time=since)
            )
        assert caught.value.status_code == 400
        assert any(d.message == "containerUrl" for d in caught.value.error.details)


def test_upload_batch_service_logs_keeps_to_its_time_window(client, pool, azurite):
    """startTime and endTime (both inclusive) choose the node's records by their times: a window before the first
    record or after the last uploads an empty log, and one that ends at the first record uploads it alone."""
    blobs, name, container = _log_container(azurite)
    node = next(iter(client.list_nodes(pool)))

    def uploaded(start: datetime, end: datetime | None = None) -> list[str]:
        options = models.UploadBatchServiceLogsOptions(container_url=container, start_time=start, end_time=end)
        result = client.upload_node_logs(pool, node.id, options)
        blob = blobs.get_blob_client(name, f"{result.virtual_directory_name}/kiln-node.log")
        return blob.download_blob().readall().decode().splitlines()

    everything = uploaded(node.allocation_time - timedelta(days=1))
    times = [datetime.fromisoformat(line.split(" ", 1)[0]) for line in everything]
    assert len(times) >= 2 and any("-> idle" in line for line in everything)
    first, last = min(times), max(times)
    assert first < last
    assert uploaded(first - timedelta(days=1), end=first - timedelta(seconds=1)) == []  # ends before them
    assert uploaded(last + timedelta(seconds=1)) == []  # starts after them
    assert uploaded(datetime.now(UTC) + timedelta(hours=1)) == []  # in the future
    assert uploaded(first - timedelta(days=1), end=first) == [line for line, t in zip(everything, times) if t == first]
