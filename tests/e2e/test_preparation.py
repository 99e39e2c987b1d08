"""Job preparation and release tasks: once per (job, node), gating, release on terminate/delete, status list."""

from __future__ import annotations

import pytest
from azure.batch import models
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

from kiln.testing import (
    create_pool_and_wait,
    read_node_file,
    shell,
    terminate_job,
    unique,
    wait_for,
    wait_tasks_completed,
)

PREP_LOG = "prep-runs.log"


def _prep_job(pool: str, job_id: str, **prep_fields) -> models.BatchJobCreateOptions:
    """Prep appends a line to a per-job log in the node's shared dir; release appends 'released'."""
    log = f"$AZ_BATCH_NODE_SHARED_DIR/{job_id}.log"
    return models.BatchJobCreateOptions(
        id=job_id,
        pool_info=models.BatchPoolInfo(pool_id=pool),
        job_preparation_task=models.BatchJobPreparationTask(
            command_line=shell(f"sleep 0.3; echo prep >> {log}; echo data > $AZ_BATCH_TASK_WORKING_DIR/common.txt"),
            **prep_fields,
        ),
        job_release_task=models.BatchJobReleaseTask(command_line=shell(f"echo released >> {log}")),
    )


def _log(client, pool: str, node_id: str, job_id: str) -> list[str]:
    return read_node_file(client, pool, node_id, f"shared/{job_id}.log").split()


def test_prep_runs_once_per_node_before_tasks_and_release_once(client, pool):
    job_id = unique("prep")
    client.create_job(_prep_job(pool, job_id))
    client.create_tasks(
        job_id,
        [
            models.BatchTaskCreateOptions(
                id=f"t{i}", command_line=shell("cat $AZ_BATCH_JOB_PREP_WORKING_DIR/common.txt")
            )
            for i in range(12)
        ],
    )
    tasks = wait_tasks_completed(client, job_id)
    assert all(t.execution_info.exit_code == 0 for t in tasks)  # every task saw prep's output
    nodes = {t.node_info.node_id for t in tasks}
    statuses = {s.node_id: s for s in client.list_job_preparation_and_release_task_status(job_id)}
    assert set(statuses) == nodes
    for node_id, status in statuses.items():
        prep = status.job_preparation_task_execution_info
        assert prep.state == "completed" and prep.exit_code == 0 and prep.result == "success"
        assert prep.retry_count == 0
        assert prep.task_root_directory == f"workitems/{job_id}/job-1/jobpreparation"
        assert prep.start_time <= prep.end_time
        assert status.job_release_task_execution_info is None  # release has not run yet
        assert _log(client, pool, node_id, job_id) == ["prep"]
        first_start = min(t.execution_info.start_time for t in tasks if t.node_info.node_id == node_id)
        assert first_start >= prep.end_time  # waitForSuccess: no task began before prep succeeded

    terminate_job(client, job_id)
    assert client.get_job(job_id).state == "completed"
    for node_id in nodes:
        assert _log(client, pool, node_id, job_id) == ["prep", "released"]
    for status in client.list_job_preparation_and_release_task_status(job_id):
        release = status.job_release_task_execution_info
        assert release.state == "completed" and release.exit_code == 0 and release.result == "success"
        assert release.task_root_directory == f"workitems/{job_id}/job-1/jobrelease"

    client.begin_delete_job(job_id, polling_interval=1).result()  # a delete after terminate: no second release
    for node_id in nodes:
        assert _log(client, pool, node_id, job_id) == ["prep", "released"]


def test_prep_only_on_nodes_given_a_task(client, pool):
    job_id = unique("lazy")
    client.create_job(_prep_job(pool, job_id))
    client.create_task(job_id, models.BatchTaskCreateOptions(id="only", command_line="/bin/true"))
    wait_tasks_completed(client, job_id)
    statuses = list(client.list_job_preparation_and_release_task_status(job_id))
    assert [s.node_id for s in statuses] == [client.get_task(job_id, "only").node_info.node_id]


def test_release_runs_on_delete_of_an_active_job(client, pool):
    job_id = unique("delrel")
    client.create_job(_prep_job(pool, job_id))
    client.create_task(job_id, models.BatchTaskCreateOptions(id="t", command_line="/bin/true"))
    node_id = wait_tasks_completed(client, job_id)[0].node_info.node_id
    client.begin_delete_job(job_id, polling_interval=1).result()
    with pytest.raises(ResourceNotFoundError):
        client.get_job(job_id)
    assert _log(client, pool, node_id, job_id) == ["prep", "released"]

    def directories_gone():  # delete removes the job's directories on its nodes too
        names = [f.name for f in client.list_node_files(pool, node_id, recursive=True)]
        return not any(name.startswith(f"workitems/{job_id}") for name in names)

    wait_for(directories_gone, 30, "the job's directories to be removed")


def test_failed_prep_retries_then_fails_and_status_shows_it(client):
    pool_id = create_pool_and_wait(client, nodes=1)
    job_id = unique("badprep")
    client.create_job(
        models.BatchJobCreateOptions(
            id=job_id,
            pool_info=models.BatchPoolInfo(pool_id=pool_id),
            job_preparation_task=models.BatchJobPreparationTask(
                command_line=shell("exit 7"), constraints=models.BatchTaskConstraints(max_task_retry_count=2)
            ),
        )
    )
    client.create_task(job_id, models.BatchTaskCreateOptions(id="t", command_line="/bin/true"))

    def prep_done():
        statuses = list(client.list_job_preparation_and_release_task_status(job_id))
        return statuses and statuses[0].job_preparation_task_execution_info.state == "completed" and statuses[0]

    prep = wait_for(prep_done, 60, "prep to fail").job_preparation_task_execution_info
    assert prep.result == "failure" and prep.exit_code == 7 and prep.retry_count == 2
    assert prep.failure_info.code == "FailureExitCode"
    task = wait_for(lambda: (t := client.get_task(job_id, "t")).state == "active" and t, 30, "task back to active")
    assert task.previous_state == "preparing"  # waited in preparing, then returned: the only node is excluded
    client.begin_delete_job(job_id, polling_interval=1).result()
    client.begin_delete_pool(pool_id, polling_interval=1).result()


def test_status_list_is_409_without_prep_or_release(client, pool):
    job_id = unique("plain")
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool)))
    with pytest.raises(ResourceExistsError) as caught:
        list(client.list_job_preparation_and_release_task_status(job_id))
    assert caught.value.error.code == "JobPreparationTaskOrReleaseTaskNotSpecified"
    with pytest.raises(ResourceNotFoundError) as caught:
        list(client.list_job_preparation_and_release_task_status("no-such-job"))
    assert caught.value.error.code == "JobNotFound"


def test_release_without_prep_is_400(client, pool):
    with pytest.raises(HttpResponseError) as caught:
        client.create_job(
            models.BatchJobCreateOptions(
                id=unique("relonly"),
                pool_info=models.BatchPoolInfo(pool_id=pool),
                job_release_task=models.BatchJobReleaseTask(command_line="/bin/true"),
            )
        )
    assert caught.value.status_code == 400
    assert any(d.message == "jobReleaseTask" for d in caught.value.error.details)


def test_release_over_15_minutes_is_400(client, pool):
    import datetime

    with pytest.raises(HttpResponseError) as caught:
        client.create_job(
            models.BatchJobCreateOptions(
                id=unique("longrel"),
                pool_info=models.BatchPoolInfo(pool_id=pool),
                job_preparation_task=models.BatchJobPreparationTask(command_line="/bin/true"),
                job_release_task=models.BatchJobReleaseTask(
                    command_line="/bin/true", max_wall_clock_time=datetime.timedelta(minutes=16)
                ),
            )
        )
    assert caught.value.status_code == 400
    assert caught.value.error.code == "InvalidPropertyValue"


def test_prep_and_release_defaults_are_materialized(client, pool):
    job_id = unique("defaults")
    client.create_job(_prep_job(pool, job_id))
    job = client.get_job(job_id)
    prep, release = job.job_preparation_task, job.job_release_task
    assert prep.id == "jobpreparation" and release.id == "jobrelease"
    assert prep.wait_for_success is True and prep.rerun_on_node_reboot_after_success is True
    assert prep.constraints.max_task_retry_count == 0
    assert prep.user_identity.auto_user.scope == "pool"
    assert prep.user_identity.auto_user.elevation_level == "nonadmin"
    import datetime

    assert release.max_wall_clock_time == datetime.timedelta(minutes=15)
    assert release.retention_time == datetime.timedelta(days=7)
