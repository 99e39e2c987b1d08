"""Output files (batch-semantics §6.6, -2 §5.3) to Azurite, driven by the SDK with SAS tokens made by
azure-storage-blob: filePattern rules, destination path and uploadHeaders, uploadCondition, the upload logs,
failures (fileUploadError, never retried), and the job manager and multi-instance primary."""

from __future__ import annotations

import json
import uuid

import pytest
from azure.batch import BatchClient, models
from azure.storage.blob import BlobServiceClient

from kiln.testing import create_pool_and_wait, read_task_file, shell, unique, wait_for, wait_job_state
from kiln.testing_azurite import Azurite, container_sas_url

PERFORM = "performexitoptionsjobaction"


@pytest.fixture(scope="module")
def out_pool(client: BatchClient) -> str:
    """One slot per node, inter-node communication for the multi-instance task."""
    pool_id = create_pool_and_wait(
        client, nodes=2, slots=1, pool_id=unique("out"), enable_inter_node_communication=True
    )
    yield pool_id
    client.begin_delete_pool(pool_id, polling_interval=0.5).result()


@pytest.fixture(scope="module")
def blobs(azurite: Azurite) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(azurite.connection_string)


def new_container(blobs: BlobServiceClient) -> str:
    name = f"out{uuid.uuid4().hex[:12]}"
    blobs.create_container(name)
    return name


def sas_url(blobs: BlobServiceClient, container: str, **permission) -> str:
    """A container SAS (write and create unless told)."""
    return container_sas_url(blobs.url, container, **(permission or {"write": True, "create": True}))


def output(pattern: str, url: str, condition: str = "taskcompletion", path: str | None = None, headers=None):
    return models.OutputFile(
        file_pattern=pattern,
        destination=models.OutputFileDestination(
            container=models.OutputFileBlobContainerDestination(container_url=url, path=path, upload_headers=headers)
        ),
        upload_options=models.OutputFileUploadConfiguration(upload_condition=condition),
    )


def listing(blobs: BlobServiceClient, container: str) -> dict[str, bytes]:
    client = blobs.get_container_client(container)
    return {b.name: client.download_blob(b.name).readall() for b in client.list_blobs()}


def new_job(client: BatchClient, pool: str, cleanup, **fields) -> str:
    job_id = unique("blobout")
    cleanup(job=job_id)
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool), **fields))
    return job_id


def completed(client: BatchClient, job_id: str, task_id: str):
    wait_for(lambda: client.get_task(job_id, task_id).state == "completed", 90, f"{task_id} completed")
    return client.get_task(job_id, task_id)


def test_patterns_paths_and_headers(client, out_pool, cleanup, blobs):
    name = new_container(blobs)
    url = sas_url(blobs, name)
    make = (
        "mkdir -p sub/deep; echo -n A > a.txt; echo -n B > b.log; echo -n C > sub/c.txt; echo -n D > sub/deep/d.txt;"
        " echo -n H > .hidden.txt; : > empty.dat; echo -n out; echo -n err >&2"
    )
    task = models.BatchTaskCreateOptions(
        id="t",
        command_line=shell(make),
        environment_settings=[models.EnvironmentSetting(name="NAME", value="a")],
        output_files=[
            output("*.txt", url, path="flat"),
            output("**/*.txt", url, path="tree"),
            output(".*.txt", url, path="dots"),
            output("sub/[a-c].txt", url, path="range"),
            output("?.log", url, path="one"),
            output("[!b].txt", url, path="neg"),
            output(
                "$NAME.txt",
                url,
                path="renamed.txt",
                headers=[models.OutputFileUploadHeader(name="Content-Type", value="text/x-kiln")],
            ),
            output("${NAME}.txt", url),
            output("../std*.txt", url, path="logs"),
            output("$AZ_BATCH_TASK_WORKING_DIR/sub/*.txt", url, path="abs"),  # absolute once expanded
            output("nothing*.bin", url, path="none"),
            output("empty.dat", url),
        ],
    )
    job_id = new_job(client, out_pool, cleanup)
    client.create_task(job_id, task)
    done = completed(client, job_id, "t")
    assert done.execution_info.result == "success", done.execution_info.failure_info
    assert listing(blobs, name) == {
        "flat/a.txt": b"A",
        "tree/a.txt": b"A",
        "tree/sub/c.txt": b"C",
        "tree/sub/deep/d.txt": b"D",
        "dots/.hidden.txt": b"H",
        "range/c.txt": b"C",
        "one/b.log": b"B",
        "neg/a.txt": b"A",
        "renamed.txt": b"A",
        "a.txt": b"A",
        "logs/stdout.txt": b"out",
        "logs/stderr.txt": b"err",
        "abs/c.txt": b"C",  # kept below the pattern's wildcard-free directories, as a relative one is
        "empty.dat": b"",
    }
    properties = blobs.get_blob_client(name, "renamed.txt").get_blob_properties()
    assert properties.content_settings.content_type == "text/x-kiln"
    lines = [json.loads(line) for line in read_task_file(client, job_id, "t", "fileuploadout.txt").splitlines()]
    assert sorted(line["blob"] for line in lines if "blob" in line) == sorted(listing(blobs, name))
    assert all("sig=" not in line.get("destination", "") for line in lines)


def test_each_upload_condition_with_a_succeeding_and_a_failing_task(client, out_pool, cleanup, blobs):
    name = new_container(blobs)
    url = sas_url(blobs, name)
    job_id = new_job(client, out_pool, cleanup)
    tasks = [
        models.BatchTaskCreateOptions(
            id=f"{condition}-{code}",
            command_line=shell(f"echo -n x > f.txt; exit {code}"),
            output_files=[output("f.txt", url, condition, path=f"{condition}-{code}")],
        )
        for condition in ("tasksuccess", "taskfailure", "taskcompletion")
        for code in (0, 3)
    ]
    client.create_tasks(job_id, tasks)
    for task in tasks:
        completed(client, job_id, task.id)
    assert sorted(listing(blobs, name)) == ["taskcompletion-0", "taskcompletion-3", "taskfailure-3", "tasksuccess-0"]


@pytest.mark.parametrize(
    ("case", "code", "category"),
    [
        ("missing container", "FileUploadContainerNotFound", "usererror"),
        ("read-only sas", "FileUploadAccessDenied", "usererror"),
        ("unreachable", "FileUploadMiscError", "servererror"),  # Kiln's category (output_files._CODES)
    ],
)
def test_a_failed_upload_fails_the_task_once_and_applies_file_upload_error(
    client, out_pool, cleanup, blobs, case, code, category
):
    name = new_container(blobs)
    url = {
        "missing container": sas_url(blobs, f"absent{uuid.uuid4().hex[:8]}"),
        "read-only sas": sas_url(blobs, name, read=True, list=True),
        "unreachable": container_sas_url("http://127.0.0.1:1", name, write=True, create=True),  # nothing listens
    }[case]
    job_id = new_job(client, out_pool, cleanup, task_failure_mode=PERFORM)
    client.create_task(
        job_id,
        models.BatchTaskCreateOptions(
            id="t",
            command_line=shell("echo -n x > f.txt"),
            output_files=[output("f.txt", url)],
            constraints=models.BatchTaskConstraints(max_task_retry_count=2),
            exit_conditions=models.ExitConditions(file_upload_error=models.ExitOptions(job_action="terminate")),
        ),
    )
    info = completed(client, job_id, "t").execution_info
    assert (info.result, info.exit_code, info.retry_count) == ("failure", 0, 0)
    assert (info.failure_info.category, info.failure_info.code) == (category, code), info.failure_info.message
    errors = [json.loads(line) for line in read_task_file(client, job_id, "t", "fileuploaderr.txt").splitlines()]
    assert [(e["code"], e["pattern"]) for e in errors] == [(code, "f.txt")]
    assert "sig=" not in errors[0]["destination"] and "sig=" not in info.failure_info.message
    wait_job_state(client, job_id, "completed")  # fileUploadError's jobAction
    assert client.get_job(job_id).execution_info.termination_reason == "TaskFailed"


def test_the_job_manager_and_the_multi_instance_primary_upload(client, out_pool, cleanup, blobs):
    name = new_container(blobs)
    url = sas_url(blobs, name)
    manager = models.BatchJobManagerTask(
        id="manager",
        command_line=shell("echo -n m > m.txt"),
        kill_job_on_completion=False,
        output_files=[output("m.txt", url, path="manager.txt")],
    )
    job_id = new_job(client, out_pool, cleanup, job_manager_task=manager)
    settings = models.MultiInstanceSettings(
        number_of_instances=2, coordination_command_line=shell("echo -n c > $AZ_BATCH_TASK_WORKING_DIR/coord.txt")
    )
    client.create_task(
        job_id,
        models.BatchTaskCreateOptions(
            id="mi",
            command_line=shell("echo -n p > p.txt"),
            multi_instance_settings=settings,
            output_files=[output("*.txt", url, path="mi")],
        ),
    )
    completed(client, job_id, "manager")
    assert completed(client, job_id, "mi").execution_info.result == "success"
    found = listing(blobs, name)
    assert found["manager.txt"] == b"m" and found["mi/p.txt"] == b"p"
    assert set(found) <= {"manager.txt", "mi/p.txt", "mi/coord.txt"}  # from the primary's wd alone
