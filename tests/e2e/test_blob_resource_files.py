"""Resource files from Blob containers (batch-semantics §6.6), against Azurite, driven by the SDK with SAS tokens
made by azure-storage-blob as a user's code makes them: storageContainerUrl (SAS or public) with blobPrefix and
filePath, autoStorageContainerName (the server's linked storage account), fileMode, and download failures."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from azure.batch import BatchClient, models
from azure.storage.blob import BlobServiceClient

from kiln.cli.embedded import EmbeddedServer
from kiln.compute.auto_storage import ENV as STORAGE_ENV
from kiln.testing import (
    create_pool_and_wait,
    make_client,
    pool_options,
    read_node_file,
    read_task_file,
    shell,
    terminate_job,
    unique,
    wait_for,
    wait_job_state,
)
from kiln.testing_azurite import Azurite, container_sas_url

PERFORM = "performexitoptionsjobaction"


@pytest.fixture(scope="module")
def storage_server(open_base: Path, azurite: Azurite) -> Iterator[EmbeddedServer]:
    """A server whose account has Azurite as its linked storage account (autoStorageContainerName)."""
    env = {STORAGE_ENV: azurite.connection_string}
    with EmbeddedServer(open_base / f"kiln-storage-{uuid.uuid4().hex[:6]}", env=env) as running:
        yield running


@pytest.fixture(scope="module")
def batch(storage_server: EmbeddedServer) -> BatchClient:
    return make_client(storage_server)


@pytest.fixture(scope="module")
def storage_pool(batch: BatchClient) -> str:
    """One slot per node: a multi-instance task is not placed on nodes of two slots (a bug of its own)."""
    return create_pool_and_wait(batch, nodes=2, slots=1, pool_id="storage-pool", enable_inter_node_communication=True)


@pytest.fixture(scope="module")
def blobs(azurite: Azurite) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(azurite.connection_string)


def container_with(blobs: BlobServiceClient, files: dict[str, bytes], **options) -> str:
    name = f"c{uuid.uuid4().hex[:12]}"
    container = blobs.create_container(name, **options)
    for blob, data in files.items():
        container.upload_blob(blob, data)
    return name


def sas_url(blobs: BlobServiceClient, container: str, expiry: timedelta = timedelta(hours=1), **permission) -> str:
    """A container SAS (read and list unless told)."""
    return container_sas_url(blobs.url, container, expiry, **(permission or {"read": True, "list": True}))


def run_task(batch: BatchClient, pool: str, task: models.BatchTaskCreateOptions, **job_fields):
    job_id = unique("blobin")
    batch.create_job(
        models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool), **job_fields)
    )
    batch.create_task(job_id, task)
    wait_for(lambda: batch.get_task(job_id, task.id).state == "completed", 90, f"{task.id} completed")
    return job_id, batch.get_task(job_id, task.id)


def test_container_blobs_under_the_prefix_keep_their_paths_under_file_path(batch, storage_pool, blobs):
    name = container_with(
        blobs,
        {"in/a.txt": b"alpha", "in/deep/er/b.txt": b"beta", "in/empty.bin": b"", "other/c.txt": b"not me"},
    )
    check = (
        "cat data/in/a.txt; echo; cat data/in/deep/er/b.txt; echo; test ! -e data/other; test -f data/in/empty.bin;"
        " test ! -s data/in/empty.bin; stat -c %a data/in/a.txt data/in/deep/er/b.txt"
    )
    source = models.ResourceFile(
        storage_container_url=sas_url(blobs, name), blob_prefix="in/", file_path="data", file_mode="0500"
    )
    job_id, task = run_task(
        batch, storage_pool, models.BatchTaskCreateOptions(id="t", command_line=shell(check), resource_files=[source])
    )
    assert task.execution_info.exit_code == 0, read_task_file(batch, job_id, "t", "stderr.txt")
    alpha, beta, *modes = read_task_file(batch, job_id, "t", "stdout.txt").split()
    assert (alpha, beta) == ("alpha", "beta")
    assert [mode[0] for mode in modes] == ["5", "5"]  # the owner's bits; others may read (docs/compatibility.md)


def test_a_public_container_needs_no_sas_and_no_file_path(batch, storage_pool, blobs):
    name = container_with(blobs, {"top.txt": b"public"}, public_access="container")
    source = models.ResourceFile(storage_container_url=f"{blobs.url.rstrip('/')}/{name}")
    job_id, task = run_task(
        batch, storage_pool, models.BatchTaskCreateOptions(id="t", command_line="cat top.txt", resource_files=[source])
    )
    assert task.execution_info.exit_code == 0, read_task_file(batch, job_id, "t", "stderr.txt")
    assert read_task_file(batch, job_id, "t", "stdout.txt") == "public"


def test_auto_storage_container_feeds_the_preparation_task_and_the_jobs_tasks(batch, storage_pool, blobs):
    name = container_with(blobs, {"common/data.txt": b"shared data\n"})
    job_id = unique("autostore")
    prep = models.BatchJobPreparationTask(
        command_line="/bin/true",
        resource_files=[models.ResourceFile(auto_storage_container_name=name, file_path="inputs")],
    )
    batch.create_job(
        models.BatchJobCreateOptions(
            id=job_id, pool_info=models.BatchPoolInfo(pool_id=storage_pool), job_preparation_task=prep
        )
    )
    batch.create_tasks(
        job_id,
        [
            models.BatchTaskCreateOptions(
                id=f"t{i}", command_line=shell("cat $AZ_BATCH_JOB_PREP_WORKING_DIR/inputs/common/data.txt")
            )
            for i in range(3)
        ],
    )
    wait_for(lambda: all(t.state == "completed" for t in batch.list_tasks(job_id)), 90, "tasks completed")
    for task in batch.list_tasks(job_id):
        assert task.execution_info.exit_code == 0, read_task_file(batch, job_id, task.id, "stderr.txt")
        assert read_task_file(batch, job_id, task.id, "stdout.txt") == "shared data\n"


def test_common_resource_files_of_a_multi_instance_task_come_from_a_container(batch, storage_pool, blobs):
    name = container_with(blobs, {"lib/common.txt": b"common"})
    settings = models.MultiInstanceSettings(
        number_of_instances=2,
        coordination_command_line=shell("test -f $AZ_BATCH_TASK_DIR/lib/common.txt"),
        common_resource_files=[models.ResourceFile(storage_container_url=sas_url(blobs, name))],
    )
    job_id, task = run_task(
        batch,
        storage_pool,
        models.BatchTaskCreateOptions(
            id="mi", command_line=shell("cat $AZ_BATCH_TASK_DIR/lib/common.txt"), multi_instance_settings=settings
        ),
    )
    assert task.execution_info.exit_code == 0, read_task_file(batch, job_id, "mi", "stderr.txt")
    assert read_task_file(batch, job_id, "mi", "stdout.txt") == "common"


def test_the_job_manager_and_the_job_release_task_download_a_container(batch, storage_pool, blobs):
    """Every step kind takes container resource files: the job manager before it runs, the release task when the
    job is terminated, each into its own working directory."""
    name = container_with(blobs, {"manager/m.txt": b"for the manager", "release/r.txt": b"for the release"})
    url = sas_url(blobs, name)
    job_id = unique("blobsteps")
    batch.create_job(
        models.BatchJobCreateOptions(
            id=job_id,
            pool_info=models.BatchPoolInfo(pool_id=storage_pool),
            job_manager_task=models.BatchJobManagerTask(
                id="manager",
                command_line="cat data/manager/m.txt",
                resource_files=[
                    models.ResourceFile(storage_container_url=url, blob_prefix="manager/", file_path="data")
                ],
                kill_job_on_completion=False,
            ),
            job_preparation_task=models.BatchJobPreparationTask(command_line="/bin/true"),
            job_release_task=models.BatchJobReleaseTask(
                command_line="cat release/r.txt",
                resource_files=[models.ResourceFile(storage_container_url=url, blob_prefix="release/")],
            ),
        )
    )
    wait_for(lambda: batch.get_task(job_id, "manager").state == "completed", 90, "manager completed")
    manager = batch.get_task(job_id, "manager")
    assert manager.execution_info.exit_code == 0, manager.execution_info.failure_info
    assert read_task_file(batch, job_id, "manager", "stdout.txt") == "for the manager"

    terminate_job(batch, job_id)  # the release task runs on the node the preparation task ran on
    (status,) = batch.list_job_preparation_and_release_task_status(job_id)
    release = status.job_release_task_execution_info
    assert (release.state, release.exit_code) == ("completed", 0), release.failure_info
    node_id = manager.node_info.node_id
    assert status.node_id == node_id
    path = f"workitems/{job_id}/job-1/jobrelease/stdout.txt"
    assert read_node_file(batch, storage_pool, node_id, path) == "for the release"
    batch.begin_delete_job(job_id, polling_interval=0.5).result()


@pytest.mark.parametrize(
    ("case", "category", "code", "message"),
    [
        (
            "missing container",
            "usererror",
            "ResourceContainerNotFound",
            "One of the specified Azure Blob container(s) was not found",
        ),
        (
            "expired sas",
            "usererror",
            "ResourceContainerAccessDenied",
            "Access for one of the specified Azure Blob container(s) is",
        ),
        (
            "sas without list",
            "usererror",
            "ResourceContainerAccessDenied",
            "Access for one of the specified Azure Blob container(s)",
        ),
        (
            "unreachable",
            "servererror",  # Kiln's category (blob_files.LIST_CODES)
            "ResourceContainerListMiscError",
            "Miscellaneous error encountered while listing one of the specified Azure Blob container(s)",
        ),
    ],
)
def test_a_container_that_cannot_be_read_is_a_pre_processing_error_not_retried(
    batch, storage_pool, blobs, case, category, code, message
):
    name = container_with(blobs, {"a.txt": b"a"})
    url = {
        "missing container": sas_url(blobs, f"absent{uuid.uuid4().hex[:8]}"),
        "expired sas": sas_url(blobs, name, expiry=timedelta(hours=-1)),
        "sas without list": sas_url(blobs, name, read=True),
        "unreachable": container_sas_url("http://127.0.0.1:1", name, read=True, list=True),  # nothing listens
    }[case]
    task = models.BatchTaskCreateOptions(
        id="t",
        command_line="/bin/true",
        resource_files=[models.ResourceFile(storage_container_url=url)],
        constraints=models.BatchTaskConstraints(max_task_retry_count=2),
        exit_conditions=models.ExitConditions(pre_processing_error=models.ExitOptions(job_action="terminate")),
    )
    job_id, done = run_task(batch, storage_pool, task, task_failure_mode=PERFORM)
    info = done.execution_info
    assert (info.result, info.exit_code, info.retry_count) == ("failure", None, 0)
    assert (info.failure_info.category, info.failure_info.code) == (category, code), info.failure_info.message
    assert "sig=" not in info.failure_info.message  # the SAS never reaches a message
    assert info.failure_info.message.startswith(message)  # Azure's words, then which container and why
    wait_job_state(batch, job_id, "completed")  # preProcessingError's jobAction
    assert batch.get_job(job_id).execution_info.termination_reason == "TaskFailed"


def test_auto_storage_without_a_linked_account_fails_the_task_naming_the_setting(client, pool, cleanup):
    job_id = unique("noauto")
    cleanup(job=job_id)
    task = models.BatchTaskCreateOptions(
        id="t", command_line="/bin/true", resource_files=[models.ResourceFile(auto_storage_container_name="inputs")]
    )
    _, done = run_task(client, pool, task)
    failure = done.execution_info.failure_info
    assert failure.code == "AutoStorageNotConfigured" and "--storage-connection-string" in failure.message


def test_a_start_task_downloads_a_container_and_a_missing_one_fails_it(batch, blobs):
    """Start tasks take container resource files as every task kind does: the blobs land in startup/wd for the
    start task (which shares them with the node's tasks here), and a missing container fails the start task with
    Azure's pre-processing failure, never retried, so the node is starttaskfailed."""
    name = container_with(blobs, {"common/data.txt": b"for every task\n"})
    good = create_pool_and_wait(
        batch,
        nodes=1,
        start_task=models.BatchStartTask(
            command_line=shell("cp data/common/data.txt $AZ_BATCH_NODE_SHARED_DIR/"),
            resource_files=[
                models.ResourceFile(storage_container_url=sas_url(blobs, name), blob_prefix="common/", file_path="data")
            ],
            wait_for_success=True,
        ),
    )
    job_id, task = run_task(
        batch,
        good,
        models.BatchTaskCreateOptions(id="reader", command_line=shell("cat $AZ_BATCH_NODE_SHARED_DIR/data.txt")),
    )
    assert task.execution_info.exit_code == 0
    assert read_task_file(batch, job_id, "reader", "stdout.txt") == "for every task\n"

    missing = f"c{uuid.uuid4().hex[:12]}"
    bad = f"pool-{uuid.uuid4().hex[:8]}"
    batch.create_pool(
        pool_options(
            bad,
            target_dedicated_nodes=1,
            start_task=models.BatchStartTask(
                command_line="/bin/true",
                resource_files=[models.ResourceFile(storage_container_url=sas_url(blobs, missing))],
                max_task_retry_count=2,
                wait_for_success=True,
            ),
        )
    )
    node = wait_for(
        lambda: next((n for n in batch.list_nodes(bad) if n.state == "starttaskfailed"), None), 120, "start task failed"
    )
    info = node.start_task_info
    assert (info.result, info.exit_code, info.retry_count) == ("failure", None, 0)
    assert (info.failure_info.category, info.failure_info.code) == ("usererror", "ResourceContainerNotFound")
