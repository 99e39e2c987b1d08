"""A task's story (GET /kiln/jobs/{job}/tasks/{task}/story and `kiln task story`): its transitions with
their stimuli, and why a task that is not running is not running."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
from azure.batch import models

from kiln.cli.exit_codes import ExitCode
from kiln.testing import run_cli, shell, unique, wait_for, wait_tasks_completed
from kiln.testing import story_response as story


def _job(client, cleanup, pool: str, **fields: Any) -> str:
    job_id = unique("story")
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool), **fields))
    cleanup(job=job_id)
    return job_id


def _why(server, job_id: str, task_id: str, expected: str) -> None:
    said: list[str] = []

    def answered() -> bool:
        said.append(story(server, job_id, task_id).json()["why"])
        return said[-1] == expected

    try:
        wait_for(answered, timeout=30, what=expected)
    except AssertionError:
        raise AssertionError(f"expected {expected!r}, last said {said[-1]!r}") from None


def test_the_story_of_a_task_retried_once_after_its_preparation(server, client, pool, cleanup, marks_dir):
    job_id = _job(
        client,
        cleanup,
        pool,
        job_preparation_task=models.BatchJobPreparationTask(command_line="/bin/true"),
    )
    once = marks_dir / f"{job_id}-failed-once"
    add_id = str(uuid.uuid4())
    client.create_task(
        job_id,
        models.BatchTaskCreateOptions(
            id="t",
            command_line=shell(f"test -e {once} && exit 0; touch {once}; exit 3"),
            constraints=models.BatchTaskConstraints(max_task_retry_count=1),
        ),
        headers={"client-request-id": add_id},
    )
    wait_tasks_completed(client, job_id)
    body = story(server, job_id, "t").json()
    assert (body["jobId"], body["taskId"], body["state"]) == (job_id, "t", "completed")
    assert body["why"] == "completed: exit code 0"
    own = [r for r in body["transitions"] if r["kind"] == "task"]
    # each attempt may wait for prep on its node (active -> preparing -> running)
    assert [r["to"] for r in own if r["to"] != "preparing"] == ["active", "running", "active", "running", "completed"]
    assert (
        own[0]["stimulus"].startswith("request ") and f"client {add_id} POST /jobs/{job_id}/tasks" in own[0]["stimulus"]
    )
    retry = next(r for r in own if r["to"] == "active" and r["from"] == "running")
    assert retry["detail"] == "exit code 3, retry 1"
    assert retry["stimulus"] == f"node {retry['nodeId']} report"
    assert own[-1]["detail"] == "exit code 0"
    preps = [(r["from"], r["to"], r["detail"]) for r in body["transitions"] if r["kind"] == "prep"]
    assert ("pending", "running", None) in preps and ("running", "completed", "exit code 0") in preps


def test_a_task_that_needs_more_slots_than_a_node_has(server, client, pool, cleanup):
    job_id = _job(client, cleanup, pool)
    client.create_task(job_id, models.BatchTaskCreateOptions(id="big", command_line="/bin/true", required_slots=4))
    _why(server, job_id, "big", "waiting: needs 4 slots; the pool's nodes have 2 slots each")


def test_a_task_blocked_by_its_failed_parent(server, client, pool, cleanup):
    job_id = _job(client, cleanup, pool, uses_task_dependencies=True)
    block = models.ExitConditions(default=models.ExitOptions(dependency_action="block"))
    client.create_task(
        job_id, models.BatchTaskCreateOptions(id="p", command_line=shell("exit 1"), exit_conditions=block)
    )
    client.create_task(
        job_id,
        models.BatchTaskCreateOptions(
            id="c", command_line="/bin/true", depends_on=models.BatchTaskDependencies(task_ids=["p"])
        ),
    )
    _why(server, job_id, "c", "blocked: parent p completed with dependencyAction block")


def test_a_task_of_a_disabled_job(server, client, pool, cleanup):
    job_id = _job(client, cleanup, pool)
    client.begin_disable_job(
        job_id, models.BatchJobDisableOptions(disable_tasks="requeue"), polling_interval=0.5
    ).result()
    client.create_task(job_id, models.BatchTaskCreateOptions(id="t", command_line="/bin/true"))
    _why(server, job_id, "t", "waiting: job is disabled")
    jobs = [r for r in story(server, job_id, "t").json()["transitions"] if r["kind"] == "job"]
    assert [(r["from"], r["to"]) for r in jobs] == [("active", "disabling"), ("disabling", "disabled")]
    assert jobs[0]["stimulus"].endswith(f"POST /jobs/{job_id}/disable")


def test_an_unknown_task_is_a_batch_404(server, client, pool, cleanup):
    job_id = _job(client, cleanup, pool)
    answer = story(server, job_id, "nope")
    assert answer.status_code == 404 and answer.json()["code"] == "TaskNotFound"
    assert story(server, unique("none"), "t").json()["code"] == "JobNotFound"
    assert httpx.get(f"{server.endpoint}/kiln/jobs/{job_id}/tasks/t/story", timeout=30).status_code == 403


def test_kiln_task_story_prints_the_transitions_and_why(server, client, pool, cleanup):
    job_id = _job(client, cleanup, pool)
    client.create_task(job_id, models.BatchTaskCreateOptions(id="t", command_line=shell("exit 4")))
    wait_tasks_completed(client, job_id)
    run = run_cli(server, "task", "story", job_id, "t")
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    added = next(line for line in lines if "(added)" in line)
    assert "task" in added and "active" in added and f"POST /jobs/{job_id}/tasks" in added
    ended = next(line for line in lines if "completed" in line and "exit code 4" in line)
    assert "running" in ended and "report" in ended and "FailureExitCode" in ended
    failure = "FailureExitCode: The task process exited with an unexpected exit code: 4"
    assert lines[-1] == f"t: completed: exit code 4 (failure: {failure})"
    as_json = run_cli(server, "task", "story", job_id, "t", "--json")
    assert json.loads(as_json.stdout)["transitions"][-1]["to"] == "completed"
    missing = run_cli(server, "task", "story", job_id, "nope")
    assert missing.returncode == ExitCode.NOT_FOUND and "TaskNotFound" in missing.stderr
