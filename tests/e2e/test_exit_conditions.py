"""Exit conditions and job reactions through the SDK (batch-semantics §6.3): exitCodes, exitCodeRanges,
preProcessingError, fileUploadError, default; jobAction under onTaskFailure; onAllTasksComplete."""

from __future__ import annotations

import pytest
from azure.batch import models
from azure.core.exceptions import HttpResponseError

from kiln.testing import shell, terminate_job, unique, wait_for, wait_job_state

Task = models.BatchTaskCreateOptions
PERFORM = "performexitoptionsjobaction"


def _job(client, pool: str, **fields) -> str:
    job_id = unique("exits")
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool), **fields))
    return job_id


def options(job_action: str | None = None, dependency_action: str | None = None) -> models.ExitOptions:
    return models.ExitOptions(job_action=job_action, dependency_action=dependency_action)


def _completed(client, job_id: str, task_id: str):
    wait_for(lambda: client.get_task(job_id, task_id).state == "completed", 60, f"{task_id} completed")
    return client.get_task(job_id, task_id)


def test_exit_conditions_are_stored_and_returned(client, pool):
    job_id = _job(client, pool, task_failure_mode=PERFORM, uses_task_dependencies=True)
    conditions = models.ExitConditions(
        exit_codes=[models.ExitCodeMapping(code=3, exit_options=options("none", "satisfy"))],
        exit_code_ranges=[models.ExitCodeRangeMapping(start=10, end=20, exit_options=options("disable"))],
        pre_processing_error=options("terminate", "block"),
        file_upload_error=options("none", "satisfy"),
        default=options(dependency_action="block"),
    )
    client.create_task(job_id, Task(id="t", command_line="/bin/true", exit_conditions=conditions))
    got = client.get_task(job_id, "t").exit_conditions
    assert got.exit_codes[0].code == 3 and got.exit_codes[0].exit_options.job_action == "none"
    assert got.exit_codes[0].exit_options.dependency_action == "satisfy"
    assert (got.exit_code_ranges[0].start, got.exit_code_ranges[0].end) == (10, 20)
    assert got.exit_code_ranges[0].exit_options.job_action == "disable"
    assert got.pre_processing_error.job_action == "terminate"
    assert got.file_upload_error.dependency_action == "satisfy"
    assert got.default.dependency_action == "block"
    job = client.get_job(job_id)
    assert job.task_failure_mode == PERFORM and job.all_tasks_complete_mode == "noaction"
    terminate_job(client, job_id)


def test_failed_task_terminates_the_job_under_performexitoptionsjobaction(client, pool):
    """No exit conditions: a non-zero exit's jobAction defaults to terminate; running tasks are ended."""
    job_id = _job(client, pool, task_failure_mode=PERFORM)
    client.create_task(job_id, Task(id="long", command_line="sleep 60"))
    wait_for(lambda: client.get_task(job_id, "long").state == "running", 60, "long running")
    client.create_task(job_id, Task(id="fails", command_line=shell("exit 4")))
    wait_job_state(client, job_id, "completed")
    job = client.get_job(job_id)
    assert job.execution_info.termination_reason == "TaskFailed"
    assert client.get_task(job_id, "fails").execution_info.exit_code == 4
    long = client.get_task(job_id, "long")
    assert long.state == "completed" and long.execution_info.failure_info.code == "TaskEnded"


def test_failed_task_leaves_a_noaction_job_active(client, pool):
    job_id = _job(client, pool)
    client.create_task(job_id, Task(id="fails", command_line=shell("exit 4")))
    assert _completed(client, job_id, "fails").execution_info.result == "failure"
    client.create_task(job_id, Task(id="next", command_line="/bin/true"))  # the job still takes and runs tasks
    assert _completed(client, job_id, "next").execution_info.result == "success"
    assert client.get_job(job_id).state == "active"


@pytest.mark.parametrize(
    ("command", "conditions", "ends_job"),
    [
        (
            shell("exit 2"),
            models.ExitConditions(exit_codes=[models.ExitCodeMapping(code=2, exit_options=options("none"))]),
            False,
        ),
        (
            shell("exit 7"),
            models.ExitConditions(
                exit_code_ranges=[models.ExitCodeRangeMapping(start=5, end=9, exit_options=options("none"))]
            ),
            False,
        ),
        (
            shell("exit 7"),
            models.ExitConditions(
                exit_codes=[models.ExitCodeMapping(code=7, exit_options=options("terminate"))],
                exit_code_ranges=[models.ExitCodeRangeMapping(start=5, end=9, exit_options=options("none"))],
            ),
            True,
        ),
        (
            shell("exit 11"),
            models.ExitConditions(
                exit_code_ranges=[models.ExitCodeRangeMapping(start=5, end=9, exit_options=options("none"))],
                default=options("none"),
            ),
            False,
        ),
        (
            shell("exit 11"),
            models.ExitConditions(
                exit_code_ranges=[models.ExitCodeRangeMapping(start=5, end=9, exit_options=options("none"))]
            ),
            True,
        ),
        (
            "/bin/true",
            models.ExitConditions(exit_codes=[models.ExitCodeMapping(code=0, exit_options=options("terminate"))]),
            True,
        ),
        ("/bin/true", models.ExitConditions(default=options("terminate")), False),  # 0 not listed: built-in none
        ("no-such-program-anywhere", models.ExitConditions(pre_processing_error=options("none")), False),
        ("no-such-program-anywhere", models.ExitConditions(default=options("none")), False),
        (
            "no-such-program-anywhere",
            models.ExitConditions(exit_codes=[models.ExitCodeMapping(code=1, exit_options=options("none"))]),
            True,
        ),
    ],
    ids=[
        "code-none",
        "range-none",
        "code-before-range",
        "default-none",
        "unlisted-terminates",
        "zero-listed",
        "zero-unlisted",
        "preprocessing-none",
        "preprocessing-default",
        "preprocessing-unlisted",
    ],
)
def test_job_action_follows_the_first_matching_condition(client, pool, command, conditions, ends_job):
    job_id = _job(client, pool, task_failure_mode=PERFORM)
    client.create_task(job_id, Task(id="t", command_line=command, exit_conditions=conditions))
    task = _completed(client, job_id, "t")
    if ends_job:
        wait_job_state(client, job_id, "completed")
        assert client.get_job(job_id).execution_info.termination_reason == "TaskFailed"
    else:
        client.create_task(job_id, Task(id="witness", command_line="/bin/true"))  # completes after t's outcome
        _completed(client, job_id, "witness")
        assert client.get_job(job_id).state == "active"
        terminate_job(client, job_id)
    if command.startswith("no-such"):
        assert task.execution_info.failure_info.code == "CommandProgramNotFound"


def test_job_action_needs_performexitoptionsjobaction(client, pool):
    job_id = _job(client, pool)
    for conditions in (
        models.ExitConditions(default=options("terminate")),
        models.ExitConditions(exit_codes=[models.ExitCodeMapping(code=1, exit_options=options("none"))]),
    ):
        with pytest.raises(HttpResponseError) as caught:
            client.create_task(job_id, Task(id="t", command_line="/bin/true", exit_conditions=conditions))
        assert caught.value.status_code == 400 and caught.value.error.code == "InvalidPropertyValue"
    assert list(client.list_tasks(job_id)) == []


@pytest.mark.parametrize(
    "conditions",
    [
        {"exitCodes": [{"code": 1, "exitOptions": {"jobAction": "explode"}}]},
        {"default": {"dependencyAction": "maybe"}},
        {"exitCodeRanges": [{"start": 9, "end": 1, "exitOptions": {}}]},
        {"exitCodes": [{"exitOptions": {}}]},
    ],
)
def test_malformed_exit_conditions_are_400(client, pool, conditions):
    job_id = _job(client, pool, task_failure_mode=PERFORM, uses_task_dependencies=True)
    with pytest.raises(HttpResponseError) as caught:
        client.create_task(job_id, {"id": "t", "commandLine": "/bin/true", "exitConditions": conditions})
    assert caught.value.status_code == 400
    assert caught.value.error.code in ("InvalidPropertyValue", "MissingRequiredProperty")
    assert list(client.list_tasks(job_id)) == []


def test_retries_come_before_exit_conditions(client, pool, marks_dir):
    """A task that fails once and then succeeds never triggers its failure's job action."""
    job_id = _job(client, pool, task_failure_mode=PERFORM)
    mark = marks_dir / "tried"
    client.create_task(
        job_id,
        Task(
            id="flaky",
            command_line=shell(f"[ -e {mark} ] || {{ touch {mark}; exit 3; }}"),
            constraints=models.BatchTaskConstraints(max_task_retry_count=1),
        ),
    )
    task = _completed(client, job_id, "flaky")
    assert task.execution_info.retry_count == 1 and task.execution_info.result == "success"
    assert client.get_job(job_id).state == "active"
    terminate_job(client, job_id)


def test_job_action_disable_disables_the_job_and_requeues_what_runs(client, pool, marks_dir):
    """As the job disable operation with disableTasks=requeue: the failing task completes, a running one
    goes back to active, nothing new starts until the job is enabled."""
    job_id = _job(client, pool, task_failure_mode=PERFORM)
    go = marks_dir / "go"
    client.create_task(job_id, Task(id="long", command_line=shell(f"while [ ! -e {go} ]; do sleep 0.1; done")))
    wait_for(lambda: client.get_task(job_id, "long").state == "running", 60, "long running")
    client.create_task(
        job_id,
        Task(
            id="fails",
            command_line="sh -c 'exit 4'",
            exit_conditions=models.ExitConditions(
                exit_codes=[models.ExitCodeMapping(code=4, exit_options=options("disable"))]
            ),
        ),
    )
    assert client.get_task(job_id, "fails").exit_conditions.exit_codes[0].exit_options.job_action == "disable"
    wait_job_state(client, job_id, "disabled")
    fails, long = client.get_task(job_id, "fails"), client.get_task(job_id, "long")
    assert (fails.state, fails.execution_info.exit_code) == ("completed", 4)
    assert long.state == "active" and long.execution_info.requeue_count == 1
    go.touch()
    client.create_task(job_id, Task(id="later", command_line="/bin/true"))
    assert client.get_task(job_id, "later").state == "active"
    client.begin_enable_job(job_id, polling_interval=1).result()
    wait_for(
        lambda: all(client.get_task(job_id, t).state == "completed" for t in ("long", "later")),
        60,
        "long and later completed after enable",
    )
    terminate_job(client, job_id)
