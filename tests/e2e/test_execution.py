"""Tasks run like Azure's Linux nodes: no shell, the directory layout, AZ_BATCH_* variables, limits, retries."""

from __future__ import annotations

import datetime

from azure.batch import models

from kiln.testing import read_task_file, shell, unique, wait_tasks_completed


def _run(client, pool, *tasks, **job_fields) -> str:
    job_id = unique("exec")
    client.create_job(
        models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool), **job_fields)
    )
    client.create_tasks(job_id, list(tasks))
    wait_tasks_completed(client, job_id)
    return job_id


def test_command_line_runs_without_a_shell(client, pool):
    job_id = _run(client, pool, models.BatchTaskCreateOptions(id="echo", command_line="echo $HOME 'two words'"))
    assert read_task_file(client, job_id, "echo", "stdout.txt") == "$HOME two words\n"


def test_environment_variables_and_layout(client, pool):
    names = [
        "AZ_BATCH_ACCOUNT_NAME",
        "AZ_BATCH_ACCOUNT_URL",
        "AZ_BATCH_POOL_ID",
        "AZ_BATCH_NODE_ID",
        "AZ_BATCH_NODE_ROOT_DIR",
        "AZ_BATCH_NODE_SHARED_DIR",
        "AZ_BATCH_NODE_STARTUP_DIR",
        "AZ_BATCH_JOB_ID",
        "AZ_BATCH_TASK_ID",
        "AZ_BATCH_TASK_DIR",
        "AZ_BATCH_TASK_WORKING_DIR",
        "AZ_BATCH_JOB_PREP_DIR",
        "AZ_BATCH_JOB_PREP_WORKING_DIR",
        "COMMON",
        "CLASH",
    ]
    script = "; ".join(f'echo "{n}=${n}"' for n in names) + "; pwd"
    job_id = _run(
        client,
        pool,
        models.BatchTaskCreateOptions(
            id="env",
            command_line=shell(script),
            environment_settings=[models.EnvironmentSetting(name="CLASH", value="task")],
        ),
        common_environment_settings=[
            models.EnvironmentSetting(name="COMMON", value="job"),
            models.EnvironmentSetting(name="CLASH", value="job"),
        ],
        job_preparation_task=models.BatchJobPreparationTask(command_line="/bin/true"),
    )
    lines = read_task_file(client, job_id, "env", "stdout.txt").splitlines()
    env = dict(line.split("=", 1) for line in lines[:-1])
    task = client.get_task(job_id, "env")
    root = env["AZ_BATCH_NODE_ROOT_DIR"]
    assert env["AZ_BATCH_ACCOUNT_NAME"] == "kilndev"
    assert env["AZ_BATCH_ACCOUNT_URL"].startswith("http://127.0.0.1:")
    assert env["AZ_BATCH_POOL_ID"] == pool
    assert env["AZ_BATCH_NODE_ID"] == task.node_info.node_id
    assert env["AZ_BATCH_NODE_SHARED_DIR"] == f"{root}/shared"
    assert env["AZ_BATCH_NODE_STARTUP_DIR"] == f"{root}/startup"
    assert env["AZ_BATCH_JOB_ID"] == job_id and env["AZ_BATCH_TASK_ID"] == "env"
    assert env["AZ_BATCH_TASK_DIR"] == f"{root}/workitems/{job_id}/job-1/env"
    assert env["AZ_BATCH_TASK_WORKING_DIR"] == f"{root}/workitems/{job_id}/job-1/env/wd"
    assert env["AZ_BATCH_JOB_PREP_DIR"] == f"{root}/workitems/{job_id}/job-1/jobpreparation"
    assert env["AZ_BATCH_JOB_PREP_WORKING_DIR"] == f"{root}/workitems/{job_id}/job-1/jobpreparation/wd"
    assert env["COMMON"] == "job" and env["CLASH"] == "task"  # the task's setting wins
    assert lines[-1] == env["AZ_BATCH_TASK_WORKING_DIR"]  # cwd is the working directory


def test_max_wall_clock_time_kills_the_task(client, pool):
    job_id = _run(
        client,
        pool,
        models.BatchTaskCreateOptions(
            id="slow",
            command_line="sleep 60",
            constraints=models.BatchTaskConstraints(max_wall_clock_time=datetime.timedelta(seconds=1)),
        ),
    )
    task = client.get_task(job_id, "slow")
    assert task.execution_info.result == "failure"
    assert task.execution_info.failure_info is not None
    elapsed = task.execution_info.end_time - task.execution_info.start_time
    assert elapsed < datetime.timedelta(seconds=30)


def test_max_task_retry_count_retries_non_zero_exits(client, pool):
    job_id = _run(
        client,
        pool,
        models.BatchTaskCreateOptions(
            id="flaky", command_line=shell("exit 1"), constraints=models.BatchTaskConstraints(max_task_retry_count=2)
        ),
        models.BatchTaskCreateOptions(id="inherits", command_line=shell("exit 1")),
        constraints=models.BatchJobConstraints(max_task_retry_count=1),
    )
    flaky = client.get_task(job_id, "flaky")
    assert flaky.execution_info.retry_count == 2 and flaky.execution_info.exit_code == 1
    assert flaky.execution_info.last_retry_time is not None and flaky.execution_info.requeue_count == 0
    inherits = client.get_task(job_id, "inherits")
    assert inherits.constraints.max_task_retry_count == 1 and inherits.execution_info.retry_count == 1


def test_missing_program_is_a_failure_with_failure_info(client, pool):
    job_id = _run(client, pool, models.BatchTaskCreateOptions(id="nope", command_line="no-such-program-xyz"))
    info = client.get_task(job_id, "nope").execution_info
    assert info.result == "failure" and info.failure_info.code == "CommandProgramNotFound"
