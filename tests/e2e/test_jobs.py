"""Jobs and tasks through the SDK: create, read, list, update, terminate, delete, counts, errors."""

from __future__ import annotations

import pytest
from azure.batch import models
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from kiln.testing import shell, terminate_job, unique, wait_for, wait_job_state, wait_tasks_completed


def _job(pool: str, **fields) -> models.BatchJobCreateOptions:
    return models.BatchJobCreateOptions(
        id=fields.pop("id", unique("job")), pool_info=models.BatchPoolInfo(pool_id=pool), **fields
    )


def test_job_create_materializes_fields_and_defaults(client, pool):
    spec = _job(
        pool,
        priority=100,
        metadata=[models.BatchMetadataItem(name="team", value="kiln")],
        constraints=models.BatchJobConstraints(max_task_retry_count=2),
        common_environment_settings=[models.EnvironmentSetting(name="A", value="1")],
        all_tasks_complete_mode="noaction",
    )
    client.create_job(spec)
    job = client.get_job(spec.id)
    assert job.state == "active"
    assert job.priority == 100
    assert job.metadata[0].name == "team" and job.metadata[0].value == "kiln"
    assert job.constraints.max_task_retry_count == 2
    assert job.common_environment_settings[0].value == "1"
    assert job.all_tasks_complete_mode == "noaction"
    assert job.task_failure_mode == "noaction"
    assert job.max_parallel_tasks == -1
    assert job.uses_task_dependencies is False
    assert job.pool_info.pool_id == pool
    assert job.execution_info.start_time is not None
    assert spec.id in [j.id for j in client.list_jobs()]
    assert [j.id for j in client.list_jobs(filter=f"id eq '{spec.id}'")] == [spec.id]


def test_job_update_and_patch(client, pool):
    spec = _job(pool, priority=1, metadata=[models.BatchMetadataItem(name="a", value="b")])
    client.create_job(spec)
    client.update_job(spec.id, models.BatchJobUpdateOptions(priority=500))
    job = client.get_job(spec.id)
    assert job.priority == 500 and job.metadata[0].name == "a"  # PATCH keeps what it did not name
    client.replace_job(spec.id, models.BatchJob(pool_info=models.BatchPoolInfo(pool_id=pool), priority=7))
    job = client.get_job(spec.id)
    assert job.priority == 7 and not job.metadata  # PUT resets what it did not name
    with pytest.raises(ResourceModifiedError):
        client.update_job(
            spec.id,
            models.BatchJobUpdateOptions(priority=3),
            etag="0x8DBADBADBAD",
            match_condition=MatchConditions.IfNotModified,
        )
    client.update_job(
        spec.id, models.BatchJobUpdateOptions(priority=3), etag=job.etag, match_condition=MatchConditions.IfNotModified
    )
    assert client.get_job(spec.id).priority == 3


def test_duplicate_job_is_409_and_unknown_job_is_404(client, pool):
    spec = _job(pool)
    client.create_job(spec)
    with pytest.raises(ResourceExistsError) as caught:
        client.create_job(_job(pool, id=spec.id.upper()))
    assert caught.value.error.code == "JobExists"
    with pytest.raises(ResourceNotFoundError) as caught:
        client.get_job("no-such-job")
    assert caught.value.error.code == "JobNotFound"


def test_tasks_create_get_list_counts_delete(client, pool):
    spec = _job(pool)
    client.create_job(spec)
    client.create_task(spec.id, models.BatchTaskCreateOptions(id="single", command_line="/bin/true"))
    result = client.create_tasks(
        spec.id,
        [models.BatchTaskCreateOptions(id=f"many{i}", command_line="/bin/true") for i in range(5)]
        + [models.BatchTaskCreateOptions(id="fails", command_line=shell("exit 3"))],
    )
    assert all(r.status == "success" for r in result.result_values)
    tasks = wait_tasks_completed(client, spec.id)
    assert len(tasks) == 7
    task = client.get_task(spec.id, "single")
    assert task.state == "completed"
    assert task.execution_info.exit_code == 0 and task.execution_info.result == "success"
    assert task.node_info.pool_id == pool and task.node_info.node_id
    assert task.node_info.task_root_directory == f"workitems/{spec.id}/job-1/single"
    assert task.constraints.retention_time is not None and task.user_identity.auto_user.scope == "pool"
    failed = client.get_task(spec.id, "fails")
    assert failed.execution_info.exit_code == 3
    assert failed.execution_info.result == "failure"
    assert failed.execution_info.failure_info.code == "FailureExitCode"
    counts = client.get_job_task_counts(spec.id)
    assert (counts.task_counts.completed, counts.task_counts.succeeded, counts.task_counts.failed) == (7, 6, 1)
    assert counts.task_slot_counts.completed == 7
    assert [t.id for t in client.list_tasks(spec.id, filter="executionInfo/result eq 'failure'")] == ["fails"]
    client.delete_task(spec.id, "single")
    with pytest.raises(ResourceNotFoundError) as caught:
        client.get_task(spec.id, "single")
    assert caught.value.error.code == "TaskNotFound"


def test_task_collection_reports_per_task_status(client, pool):
    spec = _job(pool)
    client.create_job(spec)
    client.create_task(spec.id, models.BatchTaskCreateOptions(id="taken", command_line="/bin/true"))
    raw = client.create_task_collection(
        spec.id,
        models.BatchTaskGroup(
            task_values=[
                models.BatchTaskCreateOptions(id="taken", command_line="/bin/true"),
                models.BatchTaskCreateOptions(id="fresh", command_line="/bin/true"),
                models.BatchTaskCreateOptions(id="bad id", command_line="/bin/true"),
            ]
        ),
    )
    by_id = {r.task_id: r for r in raw.result_values}
    assert by_id["fresh"].status == "success" and by_id["fresh"].etag
    assert by_id["taken"].status == "clienterror" and by_id["taken"].error.code == "TaskExists"
    assert by_id["bad id"].status == "clienterror" and by_id["bad id"].error.code == "InvalidPropertyValue"


def test_task_collection_over_100_is_400(client, pool):
    spec = _job(pool)
    client.create_job(spec)
    with pytest.raises(HttpResponseError) as caught:
        client.create_task_collection(
            spec.id,
            models.BatchTaskGroup(
                task_values=[models.BatchTaskCreateOptions(id=f"t{i}", command_line="/bin/true") for i in range(101)]
            ),
        )
    assert caught.value.status_code == 400
    assert client.get_job_task_counts(spec.id).task_counts.active == 0  # nothing half-added


def test_sdk_create_tasks_chunks_large_lists(client, pool):
    spec = _job(pool)
    client.create_job(spec)
    result = client.create_tasks(
        spec.id, [models.BatchTaskCreateOptions(id=f"t{i:03d}", command_line="/bin/true") for i in range(250)]
    )
    assert len(result.result_values) == 250 and all(r.status == "success" for r in result.result_values)
    assert len(wait_tasks_completed(client, spec.id)) == 250


def test_listing_tasks_pages_through_them_all_with_and_without_a_filter(client, pool):
    """A page without $filter reads only its own rows from the store; pages must still add up, in order."""
    spec = _job(pool)
    client.create_job(spec)
    client.begin_disable_job(
        spec.id, models.BatchJobDisableOptions(disable_tasks="requeue"), polling_interval=1
    ).result()  # keep the tasks active: a stable filter
    ids = [f"t{i:03d}" for i in range(25)]
    client.create_task_collection(
        spec.id,
        models.BatchTaskGroup(task_values=[models.BatchTaskCreateOptions(id=i, command_line="/bin/true") for i in ids]),
    )
    assert [t.id for t in client.list_tasks(spec.id, max_results=10)] == ids
    assert [t.id for t in client.list_tasks(spec.id, max_results=25)] == ids
    assert [t.id for t in client.list_tasks(spec.id, max_results=7, select=["id"])] == ids
    client.delete_task(spec.id, "t003")
    assert [t.id for t in client.list_tasks(spec.id, max_results=4)] == [i for i in ids if i != "t003"]
    assert [t.id for t in client.list_tasks(spec.id, max_results=6, filter="state eq 'active'")] == [
        i for i in ids if i != "t003"
    ]
    assert list(client.list_tasks(spec.id, max_results=6, filter="state eq 'completed'")) == []
    assert [t.id for t in client.list_tasks(spec.id, max_results=3, filter="startswith(id,'t01')")] == ids[10:20]
    assert [t.id for t in client.list_tasks(spec.id, filter="id eq 'T012'")] == []  # ids compare with case
    assert [t.id for t in client.list_tasks(spec.id, filter="id eq 't012' and executionInfo/exitCode eq null")] == [
        "t012"
    ]
    # a range of ids has no index in the wire's order: the predicate decides it, page by page
    assert [t.id for t in client.list_tasks(spec.id, max_results=2, filter="id lt 't006'")] == [
        i for i in ids[:6] if i != "t003"
    ]
    texts = (None, "state eq 'active'", "startswith(id,'t')", "id ge 't'")
    for text in texts:  # a page seeks past the previous one's last task, whatever changed
        pages = client.list_tasks(spec.id, max_results=10, filter=text).by_page()
        first = [t.id for t in next(pages)]
        client.delete_task(spec.id, first[0])
        ids.remove(first[0])
        assert first[1:] + [t.id for page in pages for t in page] == [i for i in ids if i != "t003"]


def test_terminate_task_kills_it(client, pool):
    spec = _job(pool)
    client.create_job(spec)
    client.create_task(spec.id, models.BatchTaskCreateOptions(id="long", command_line="sleep 60"))
    wait_for(lambda: client.get_task(spec.id, "long").state == "running", 30, "running")
    client.terminate_task(spec.id, "long")
    task = client.get_task(spec.id, "long")
    assert task.state == "completed"
    assert task.execution_info.failure_info.code == "TaskEnded"


def test_terminate_job_with_reason_and_then_adding_tasks_is_409(client, pool):
    spec = _job(pool)
    client.create_job(spec)
    client.create_task(spec.id, models.BatchTaskCreateOptions(id="long", command_line="sleep 60"))
    wait_for(lambda: client.get_task(spec.id, "long").state == "running", 30, "running")
    terminate_job(client, spec.id, "enough")
    job = client.get_job(spec.id)
    assert job.state == "completed"
    assert job.execution_info.termination_reason == "enough"
    assert job.execution_info.end_time is not None
    assert client.get_task(spec.id, "long").state == "completed"
    with pytest.raises(ResourceExistsError) as caught:
        client.create_task(spec.id, models.BatchTaskCreateOptions(id="late", command_line="/bin/true"))
    assert caught.value.error.code == "JobCompleted"
    with pytest.raises(ResourceExistsError) as caught:
        terminate_job(client, spec.id)
    assert caught.value.error.code == "JobCompleted"


def test_delete_job_removes_it(client, pool):
    spec = _job(pool)
    client.create_job(spec)
    client.create_task(spec.id, models.BatchTaskCreateOptions(id="t", command_line="/bin/true"))
    wait_tasks_completed(client, spec.id)
    client.begin_delete_job(spec.id, polling_interval=1).result()
    with pytest.raises(ResourceNotFoundError):
        client.get_job(spec.id)
    assert spec.id not in [j.id for j in client.list_jobs()]


def test_on_all_tasks_complete_terminates_job(client, pool):
    """The usual pattern: add the tasks, then switch the job to terminatejob."""
    spec = _job(pool)
    client.create_job(spec)
    client.create_tasks(
        spec.id, [models.BatchTaskCreateOptions(id=f"t{i}", command_line="sleep 0.2") for i in range(3)]
    )
    client.update_job(spec.id, models.BatchJobUpdateOptions(all_tasks_complete_mode="terminatejob"))
    wait_job_state(client, spec.id, "completed")
    assert client.get_job(spec.id).execution_info.termination_reason == "AllTasksComplete"
    assert all(t.execution_info.result == "success" for t in client.list_tasks(spec.id))


def test_on_all_tasks_complete_with_no_tasks_completes_at_once(client, pool):
    spec = _job(pool, all_tasks_complete_mode="terminatejob")
    client.create_job(spec)
    wait_job_state(client, spec.id, "completed")
    assert client.get_job(spec.id).execution_info.termination_reason == "AllTasksComplete"


def test_bad_bodies_are_400_and_store_is_intact(client, pool):
    spec = _job(pool)
    client.create_job(spec)
    with pytest.raises(HttpResponseError) as caught:
        client.create_task(spec.id, models.BatchTaskCreateOptions(id="x" * 65, command_line="/bin/true"))
    assert caught.value.status_code == 400 and caught.value.error.code == "InvalidPropertyValue"
    with pytest.raises(HttpResponseError) as caught:
        client.create_job(models.BatchJobCreateOptions(id=unique("nopool"), pool_info=models.BatchPoolInfo()))
    assert caught.value.status_code == 400
    assert client.get_job(spec.id).state == "active"


def test_container_settings_are_refused_wherever_a_task_could_take_them(client, pool, cleanup):
    """Batch allows containerSettings only on pools with a containerConfiguration, which Kiln pools cannot
    have: a task, job manager, preparation or release task that asks for one is refused, naming it."""
    container = models.BatchTaskContainerSettings(image_name="ubuntu:22.04")
    job_id = unique("container")
    cleanup(job=job_id)
    client.create_job(_job(pool, id=job_id))
    with pytest.raises(HttpResponseError) as caught:
        client.create_task(
            job_id, models.BatchTaskCreateOptions(id="t", command_line="true", container_settings=container)
        )
    assert (caught.value.status_code, caught.value.error.code) == (400, "InvalidPropertyValue")
    assert any(d.message == "containerSettings" for d in caught.value.error.details)
    result = client.create_task_collection(
        job_id,
        models.BatchTaskGroup(
            task_values=[
                models.BatchTaskCreateOptions(id="c1", command_line="true", container_settings=container),
                models.BatchTaskCreateOptions(id="c2", command_line="true"),
            ]
        ),
    )
    outcome = {r.task_id: (r.status, r.error.code if r.error else None) for r in result.result_values}
    assert outcome == {"c1": ("clienterror", "InvalidPropertyValue"), "c2": ("success", None)}
    assert [t.id for t in client.list_tasks(job_id)] == ["c2"]
    prep = models.BatchJobPreparationTask(command_line="true", container_settings=container)
    bodies = {
        "jobManagerTask.containerSettings": _job(
            pool, job_manager_task=models.BatchJobManagerTask(id="m", command_line="true", container_settings=container)
        ),
        "jobPreparationTask.containerSettings": _job(pool, job_preparation_task=prep),
        "jobReleaseTask.containerSettings": _job(
            pool,
            job_preparation_task=models.BatchJobPreparationTask(command_line="true"),
            job_release_task=models.BatchJobReleaseTask(command_line="true", container_settings=container),
        ),
    }
    for prop, body in bodies.items():
        with pytest.raises(HttpResponseError) as caught:
            client.create_job(body)
        assert caught.value.status_code == 400
        assert any(d.message == prop for d in caught.value.error.details), prop
        with pytest.raises(ResourceNotFoundError):
            client.get_job(body.id)
