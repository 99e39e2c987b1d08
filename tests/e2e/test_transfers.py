"""Kiln's transfer accounting (GET /kiln/jobs/{job}/transfers, `kiln job transfers`), against Azurite: a job
whose preparation task pulls a container's common data downloads it once per node, where the same job without
one downloads it once per task; output file uploads are counted per task."""

from __future__ import annotations

import json
import os
import uuid

import httpx
import pytest
from azure.batch import BatchClient, models
from azure.core.exceptions import ResourceNotFoundError
from azure.core.rest import HttpRequest
from azure.storage.blob import BlobServiceClient
from typer.testing import CliRunner

from kiln.cli.main import app
from kiln.testing import shell, unique, wait_for
from kiln.testing_azurite import container_sas_url

TASKS = 100
COMMON = {"common/a.bin": os.urandom(3000), "common/b.bin": os.urandom(1000)}
SIZE = sum(len(data) for data in COMMON.values())


def job_transfers(client: BatchClient, job_id: str) -> dict:
    response = client.send_request(HttpRequest("GET", f"/kiln/jobs/{job_id}/transfers"))
    response.raise_for_status()
    return response.json()


def container(blobs: BlobServiceClient, files: dict[str, bytes], **permission: bool) -> str:
    name = f"c{uuid.uuid4().hex[:12]}"
    created = blobs.create_container(name)
    for blob, data in files.items():
        created.upload_blob(blob, data)
    return container_sas_url(blobs.url, name, **permission)


def run_job(client: BatchClient, pool: str, cleanup, *, prep: bool, source: str, outputs: str) -> str:
    job_id = unique("transfers")
    common = models.ResourceFile(storage_container_url=source, file_path="data")
    preparation = models.BatchJobPreparationTask(command_line="/bin/true", resource_files=[common]) if prep else None
    client.create_job(
        models.BatchJobCreateOptions(
            id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool), job_preparation_task=preparation
        )
    )
    cleanup(job=job_id)
    where = "$AZ_BATCH_JOB_PREP_WORKING_DIR" if prep else "."
    tasks = [
        models.BatchTaskCreateOptions(
            id=f"t{i}",
            command_line=shell(f"cat {where}/data/common/*.bin | wc -c > result.txt"),
            resource_files=None if prep else [common],
            output_files=[
                models.OutputFile(
                    file_pattern="result.txt",
                    destination=models.OutputFileDestination(
                        container=models.OutputFileBlobContainerDestination(
                            container_url=outputs, path=f"{job_id}/t{i}"
                        )
                    ),
                    upload_options=models.OutputFileUploadConfiguration(upload_condition="tasksuccess"),
                )
            ],
        )
        for i in range(TASKS)
    ]
    client.create_tasks(job_id, tasks)
    wait_for(lambda: all(t.state == "completed" for t in client.list_tasks(job_id)), 120, "tasks completed")
    assert {t.execution_info.exit_code for t in client.list_tasks(job_id)} == {0}
    return job_id


def test_a_preparation_task_downloads_the_common_data_once_per_node_and_the_figures_show_it(
    server, client, pool, azurite, cleanup
):
    blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
    source = container(blobs, COMMON, read=True, list=True)
    outputs = container(blobs, {}, write=True, create=True)
    result_size = len(f"{SIZE}\n")

    job_id = run_job(client, pool, cleanup, prep=True, source=source, outputs=outputs)
    body = job_transfers(client, job_id)
    busy = [node for node in body["nodes"] if node["tasksRun"]]
    assert len(busy) == 2 and sum(node["tasksRun"] for node in busy) == TASKS
    for node in busy:
        assert (node["preparation"]["downloadedBytes"], node["preparation"]["downloadedFiles"]) == (SIZE, 2)
        assert node["tasks"]["downloadedBytes"] == 0
        assert node["preparationSavedBytes"] == (node["tasksRun"] - 1) * SIZE
    assert body["preparation"]["downloadedBytes"] == 2 * SIZE and body["tasks"]["downloadedBytes"] == 0
    assert (body["tasks"]["uploadedFiles"], body["tasks"]["uploadedBytes"]) == (TASKS, TASKS * result_size)
    assert body["total"]["downloadedBytes"] == 2 * SIZE
    task_steps = [step for step in body["steps"] if step["kind"] == "task"]
    assert sorted(step["taskId"] for step in task_steps) == sorted(f"t{i}" for i in range(TASKS))
    (upload,) = task_steps[0]["sources"]
    assert upload["direction"] == "upload" and "?" not in upload["source"]  # no SAS token
    (prep_step, *_) = [step for step in body["steps"] if step["kind"] == "prep"]
    assert prep_step["taskId"] is None and prep_step["sources"][0]["source"] == source.split("?")[0]

    every_task = run_job(client, pool, cleanup, prep=False, source=source, outputs=outputs)
    alone = job_transfers(client, every_task)
    assert alone["tasks"]["downloadedBytes"] == TASKS * SIZE and alone["preparation"]["downloadedBytes"] == 0
    assert all(node["preparationSavedBytes"] == 0 for node in alone["nodes"])

    env = {
        "AZURE_BATCH_ENDPOINT": server.endpoint,
        "AZURE_BATCH_ACCOUNT": server.account_name,
        "AZURE_BATCH_ACCESS_KEY": server.account_key,
        "COLUMNS": "250",
    }
    shown = CliRunner().invoke(app, ["job", "transfers", job_id, "--json"], env=env)
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout) == body
    table = CliRunner().invoke(app, ["job", "transfers", job_id], env=env).stdout
    assert "prep saved" in table and all(node["nodeId"] in table for node in busy)
    assert f"{SIZE / 1024:.1f} KiB / 2 files" in table


def test_the_transfers_of_a_job_that_does_not_exist_and_without_the_accounts_key(server, client):
    with pytest.raises(ResourceNotFoundError) as missing:
        job_transfers(client, unique("none"))
    assert missing.value.error.code == "JobNotFound"
    assert httpx.get(f"{server.endpoint}/kiln/jobs/{unique('none')}/transfers", timeout=30).status_code == 403
