"""Batch's request and field limits, and a task that cannot be launched: refused or failed, never a wedged node."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from azure.batch import models
from azure.core.exceptions import HttpResponseError

from kiln.api.client_auth import SharedKeyAuth
from kiln.api.http import MAX_BODY_BYTES
from kiln.testing import create_pool_and_wait, unique, wait_tasks_completed
from kiln.wire.models import COMMAND_LINE_MAX, ENVIRONMENT_VALUE_MAX


def _job(client, pool: str, cleanup) -> str:
    job_id = unique("limits")
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool)))
    cleanup(job=job_id)
    return job_id


def _property_name(error: HttpResponseError) -> str:
    return error.response.json()["values"][0]["value"]


@pytest.mark.parametrize(
    ("task", "name"),
    [
        (models.BatchTaskCreateOptions(id="long", command_line="x" * (COMMAND_LINE_MAX + 1)), "commandLine"),
        (
            models.BatchTaskCreateOptions(
                id="env",
                command_line="/bin/true",
                environment_settings=[models.EnvironmentSetting(name="BIG", value="x" * (ENVIRONMENT_VALUE_MAX + 1))],
            ),
            "environmentSettings.value",
        ),
    ],
)
def test_a_field_over_its_limit_is_400_naming_it_and_nothing_is_stored(client, pool, cleanup, task, name):
    job_id = _job(client, pool, cleanup)
    with pytest.raises(HttpResponseError) as caught:
        client.create_task(job_id, task)
    assert (caught.value.status_code, caught.value.error.code) == (400, "InvalidPropertyValue")
    assert _property_name(caught.value) == name
    assert list(client.list_tasks(job_id)) == []


def test_a_command_line_at_the_limit_is_accepted(client, pool, cleanup):
    job_id = _job(client, pool, cleanup)
    client.create_task(
        job_id, models.BatchTaskCreateOptions(id="edge", command_line="echo " + "x" * (COMMAND_LINE_MAX - 5))
    )
    [task] = wait_tasks_completed(client, job_id)
    assert task.execution_info.exit_code == 0


def test_a_body_over_1_mb_is_413_request_body_too_large(server, client, pool, cleanup):
    job_id = _job(client, pool, cleanup)
    body = json.dumps({"id": "huge", "commandLine": "x" * MAX_BODY_BYTES})
    response = httpx.post(
        f"{server.endpoint}/jobs/{job_id}/tasks",
        params={"api-version": "2025-06-01"},
        content=body,
        headers={"content-type": "application/json; odata=minimalmetadata"},
        auth=SharedKeyAuth(server.account_name, server.account_key),
    )
    assert (response.status_code, response.json()["code"]) == (413, "RequestBodyTooLarge")
    assert list(client.list_tasks(job_id)) == []


def test_a_task_that_cannot_be_launched_fails_and_its_node_runs_the_next(client, cleanup, open_tmp: Path):
    not_a_program = open_tmp / "not-a-program"
    not_a_program.write_bytes(b"\x00\x01 neither ELF nor #!")
    not_a_program.chmod(0o755)  # executable, but exec answers ENOEXEC
    pool_id = create_pool_and_wait(client, nodes=1, slots=1)
    cleanup(pool=pool_id)
    job_id = _job(client, pool_id, cleanup)
    client.create_tasks(
        job_id,
        [
            models.BatchTaskCreateOptions(id="poison", command_line=str(not_a_program)),
            models.BatchTaskCreateOptions(id="innocent", command_line="/bin/true"),
        ],
    )
    tasks = {task.id: task for task in wait_tasks_completed(client, job_id)}
    poison, innocent = tasks["poison"].execution_info, tasks["innocent"].execution_info
    assert (poison.result, poison.failure_info.category, poison.failure_info.code) == (
        "failure",
        "usererror",
        "CommandProgramNotFound",
    )
    assert "Exec format error" in poison.failure_info.message and poison.requeue_count == 0
    assert (innocent.result, innocent.exit_code, innocent.requeue_count) == ("success", 0, 0)
    assert tasks["poison"].node_info.node_id == tasks["innocent"].node_info.node_id
