"""Node files and task files: list (recursive), read, properties, delete, with Azure's paths."""

from __future__ import annotations

import httpx
import pytest
from azure.batch import models
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

from kiln.api.client_auth import SharedKeyAuth
from kiln.testing import read_node_file, read_task_file, shell, unique, wait_for, wait_tasks_completed


@pytest.fixture(scope="module")
def finished(client, pool):
    """A job with one task that wrote some files into its working directory."""
    job_id = unique("files")
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool)))
    client.create_task(
        job_id,
        models.BatchTaskCreateOptions(
            id="writer",
            command_line=shell(
                "echo out; echo err >&2; mkdir -p sub; echo deep > sub/deep.txt; printf 0123456789 > digits.bin"
            ),
        ),
    )
    task = wait_tasks_completed(client, job_id)[0]
    return job_id, task.node_info.node_id


def test_task_files_list_and_recursive(client, finished):
    job_id, _ = finished
    top = {f.name: f for f in client.list_task_files(job_id, "writer")}
    assert {"stdout.txt", "stderr.txt", "wd"} <= set(top)
    assert top["wd"].is_directory and top["wd"].properties is None
    assert top["stdout.txt"].properties.content_length == 4
    deep = {f.name for f in client.list_task_files(job_id, "writer", recursive=True)}
    assert {"wd/sub/deep.txt", "wd/digits.bin", "stdout.txt"} <= deep


def test_task_file_content_and_properties(client, finished):
    job_id, _ = finished
    assert read_task_file(client, job_id, "writer", "stdout.txt") == "out\n"
    assert read_task_file(client, job_id, "writer", "stderr.txt") == "err\n"
    assert read_task_file(client, job_id, "writer", "wd/sub/deep.txt") == "deep\n"
    props = client.get_task_file_properties(job_id, "writer", "wd/digits.bin")
    assert props.content_length == 10 and props.is_directory is False
    ranged = b"".join(client.download_task_file(job_id, "writer", "wd/digits.bin", ocp_range="bytes=2-5"))
    assert ranged == b"2345"


def test_node_files_use_azure_layout(client, pool, finished):
    job_id, node_id = finished
    top = {f.name for f in client.list_node_files(pool, node_id)}
    assert {"applications", "fsmounts", "shared", "startup", "volatile", "workitems"} <= top
    deep = {f.name for f in client.list_node_files(pool, node_id, recursive=True)}
    assert f"workitems/{job_id}/job-1/writer/stdout.txt" in deep
    assert read_node_file(client, pool, node_id, f"workitems/{job_id}/job-1/writer/stdout.txt") == "out\n"


def test_delete_files_and_404s(client, server, pool, finished):
    job_id, node_id = finished
    client.delete_task_file(job_id, "writer", "wd/digits.bin")
    with pytest.raises(ResourceNotFoundError):  # HEAD: a 404 with no body
        client.get_task_file_properties(job_id, "writer", "wd/digits.bin")
    with pytest.raises(ResourceNotFoundError):  # a streamed download: the SDK does not read the error body
        read_task_file(client, job_id, "writer", "wd/digits.bin")
    response = httpx.get(
        f"{server.endpoint}/jobs/{job_id}/tasks/writer/files/wd%2Fdigits.bin",
        params={"api-version": "2025-06-01"},
        auth=SharedKeyAuth(server.account_name, server.account_key),
    )
    assert response.status_code == 404 and response.json()["code"] == "FileNotFound"
    client.delete_node_file(pool, node_id, f"workitems/{job_id}/job-1/writer/wd/sub", recursive=True)
    names = {f.name for f in client.list_task_files(job_id, "writer", recursive=True)}
    assert not any(name.startswith("wd/sub") for name in names)
    with pytest.raises(ResourceNotFoundError):
        read_node_file(client, pool, node_id, "shared/no-such-file.txt")


def test_files_of_a_task_that_never_ran_are_409(client, pool):
    job_id = unique("nofiles")
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id="nowhere")))
    client.create_task(job_id, models.BatchTaskCreateOptions(id="waiting", command_line="/bin/true"))
    with pytest.raises(ResourceExistsError) as caught:
        list(client.list_task_files(job_id, "waiting"))
    assert caught.value.error.code == "TaskFilesUnavailable"
    assert wait_for(lambda: client.get_task(job_id, "waiting").state == "active", 5, "still active")
