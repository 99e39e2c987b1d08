"""Faults on demand (`kiln fault …` over /kiln/…/faults/…): the Batch application, through the SDK, sees
what it would see on Azure, and each fault shows in the story of the tasks it hit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from azure.batch import BatchClient, models
from typer.testing import CliRunner, Result

from kiln.cli.exit_codes import ExitCode
from kiln.cli.main import app
from kiln.testing import create_pool_and_wait, shell, unique, wait_for, wait_tasks_completed

runner = CliRunner()


@pytest.fixture
def kiln(server):
    env = {"KILN_ENDPOINT": server.endpoint, "KILN_ACCOUNT_NAME": server.account_name}
    env["KILN_ACCOUNT_KEY"] = server.account_key

    def run(*args: str, expect: int = ExitCode.OK) -> Result:
        result = runner.invoke(app, list(args), env=env)
        assert result.exit_code == expect, (args, result.exit_code, result.output, result.exception)
        return result

    return run


def _story(kiln, job_id: str, task_id: str) -> list[dict]:
    return json.loads(kiln("task", "story", job_id, task_id, "--json").stdout)["transitions"]


def _job(client: BatchClient, cleanup, pool_id: str, **fields) -> str:
    job_id = unique("fault")
    client.create_job(
        models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id), **fields)
    )
    cleanup(job=job_id)
    return job_id


def _first_run_hangs(once: Path) -> str:
    """A command whose first run marks `once` and hangs; a second run succeeds."""
    return shell(f"if [ -e {once} ]; then exit 0; fi; touch {once}; exec sleep 300")


def _started(client: BatchClient, job_id: str, once: Path) -> None:
    wait_for(lambda: once.exists() and client.get_task(job_id, "t").state == "running", what="first run started")


def test_kill_task_ends_it_with_137_and_its_retry_runs(kiln, client, pool, cleanup, marks_dir):
    job_id = _job(client, cleanup, pool)
    once = marks_dir / f"{job_id}-once"
    client.create_task(
        job_id,
        models.BatchTaskCreateOptions(
            id="t",
            command_line=_first_run_hangs(once),
            constraints=models.BatchTaskConstraints(max_task_retry_count=1),
        ),
    )
    _started(client, job_id, once)
    assert "process(es) killed" in kiln("fault", "kill-task", job_id, "t").stdout
    [task] = wait_tasks_completed(client, job_id)
    assert (task.execution_info.exit_code, task.execution_info.retry_count) == (0, 1)

    story = _story(kiln, job_id, "t")
    fault = next(r for r in story if r["kind"] == "fault")
    assert fault["to"] == "kill-task" and f"/kiln/jobs/{job_id}/tasks/t/faults/kill" in fault["stimulus"]
    after = story[story.index(fault) + 1 :]
    assert any(r["from"] == "running" and r["to"] == "active" and "exit code 137" in r["detail"] for r in after)
    kiln("fault", "kill-task", job_id, "t", expect=ExitCode.CONFLICT)  # completed: nothing runs


def test_lose_node_requeues_its_task_and_the_next_prep_fails_as_asked(kiln, client, cleanup, marks_dir):
    pool_id = create_pool_and_wait(client, nodes=1)
    cleanup(pool=pool_id)
    [node] = [n.id for n in client.list_nodes(pool_id)]
    job_id = _job(client, cleanup, pool_id)
    once = marks_dir / f"{job_id}-once"
    client.create_task(job_id, models.BatchTaskCreateOptions(id="t", command_line=_first_run_hangs(once)))
    _started(client, job_id, once)

    assert "1 task(s) on it" in kiln("fault", "lose-node", pool_id, node).stdout
    [task] = wait_tasks_completed(client, job_id)
    assert (task.execution_info.exit_code, task.execution_info.requeue_count) == (0, 1)
    story = _story(kiln, job_id, "t")
    fault = next(r for r in story if r["kind"] == "fault")
    assert (fault["to"], fault["nodeId"]) == ("lose-node", node)
    assert any(r["from"] == "running" and r["to"] == "active" for r in story[story.index(fault) + 1 :])
    wait_for(lambda: client.get_node(pool_id, node).state == "idle", what="the lost node back")

    kiln("fault", "fail-next-prep", pool_id, node, "--exit-code", "7")
    prep = models.BatchJobPreparationTask(command_line="/bin/true")
    prepped = _job(client, cleanup, pool_id, job_preparation_task=prep)
    client.create_task(prepped, models.BatchTaskCreateOptions(id="t", command_line="/bin/true"))

    def prep_ended() -> models.BatchJobPreparationTaskExecutionInfo | None:
        status = list(client.list_job_preparation_and_release_task_status(prepped))
        info = status[0].job_preparation_task_execution_info if status else None
        return info if info is not None and info.state == "completed" else None

    info = wait_for(prep_ended, what="the preparation task ended")
    assert (info.exit_code, info.result, info.failure_info.code) == (7, "failure", "FailureExitCode")
    assert client.get_task(prepped, "t").state == "active"  # its only node failed the prep: it waits, as on Azure
    fault = next(r for r in _story(kiln, prepped, "t") if r["kind"] == "fault")
    assert (fault["to"], fault["nodeId"], fault["detail"]) == ("fail-next-prep", node, "exit code 7")


def test_fault_errors(kiln, pool):
    kiln("fault", "lose-node", pool, "tvmps_none", expect=ExitCode.NOT_FOUND)
    refused = kiln("fault", "fail-next-prep", pool, "tvmps_none", "--exit-code", "0", expect=ExitCode.FAILED)
    assert "exitCode" in refused.stderr
    kiln("fault", "kill-task", unique("none"), "t", expect=ExitCode.NOT_FOUND)
