"""Job schedules through the SDK: CRUD, timing, one active job at a time, states, errors, auto pools, restart.

Batch's shortest recurrenceInterval and startWindow is one minute; these tests run a server of their own
that allows one second (KILN_MIN_SCHEDULE_INTERVAL), so recurrences come within seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from azure.batch import BatchClient, models
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from kiln.cli.embedded import EmbeddedServer
from kiln.testing import (
    UBUNTU,
    create_pool_and_wait,
    make_client,
    read_task_file,
    shell,
    terminate_job,
    unique,
    wait_for,
    wait_job_state,
    wait_tasks_completed,
)

FAST = {"KILN_MIN_SCHEDULE_INTERVAL": "PT1S"}


@pytest.fixture(scope="module")
def fast_server(open_base) -> Iterator[EmbeddedServer]:
    with EmbeddedServer(open_base / "schedules", env=FAST) as running:
        yield running


@pytest.fixture(scope="module")
def sc(fast_server) -> BatchClient:
    return make_client(fast_server)


@pytest.fixture(scope="module")
def spool(sc) -> str:
    return create_pool_and_wait(sc, nodes=1, slots=2, pool_id="schedule-pool")


def _spec(pool: str = "schedule-pool", **fields) -> models.BatchJobSpecification:
    pool_info = fields.pop("pool_info", None) or models.BatchPoolInfo(pool_id=pool)
    return models.BatchJobSpecification(pool_info=pool_info, **fields)


def _create(client, schedule: models.BatchJobScheduleConfiguration, spec=None, **fields) -> str:
    schedule_id = fields.pop("id", None) or unique("sched")
    client.create_job_schedule(
        models.BatchJobScheduleCreateOptions(
            id=schedule_id, schedule=schedule, job_specification=spec or _spec(), **fields
        )
    )
    return schedule_id


def _every(seconds: int, **fields) -> models.BatchJobScheduleConfiguration:
    return models.BatchJobScheduleConfiguration(recurrence_interval=timedelta(seconds=seconds), **fields)


def _jobs(client, schedule_id: str) -> list:
    return sorted(client.list_jobs_from_schedule(schedule_id), key=lambda j: int(j.id.rsplit("-", 1)[1]))


def _wait_jobs(client, schedule_id: str, n: int, timeout: float = 60) -> list:
    return wait_for(
        lambda: (jobs := _jobs(client, schedule_id)) and len(jobs) >= n and jobs, timeout, f"{n} jobs of {schedule_id}"
    )


def _wait_next_run_after(client, schedule_id: str, moment: datetime, timeout: float = 60) -> None:
    """Let the schedule's occurrences pass `moment` (nextRunTime moves on as they come and go)."""
    wait_for(
        lambda: client.get_job_schedule(schedule_id).execution_info.next_run_time > moment,
        timeout,
        f"{schedule_id} nextRunTime after {moment}",
    )


def _code(info: pytest.ExceptionInfo) -> str:
    return info.value.error.code


def _ends_at_once(**fields) -> models.BatchJobSpecification:
    """Jobs with no tasks and onAllTasksComplete=terminatejob complete as soon as they are made."""
    return _spec(all_tasks_complete_mode="terminatejob", **fields)


# ---------------------------------------------------------------------------------------------- CRUD
def test_create_get_list_exists(sc, spool):
    later = datetime.now(UTC) + timedelta(days=1)
    schedule_id = _create(
        sc,
        models.BatchJobScheduleConfiguration(
            do_not_run_until=later,
            do_not_run_after=later + timedelta(days=7),
            start_window=timedelta(hours=1),
            recurrence_interval=timedelta(hours=2),
        ),
        _spec(priority=10, display_name="nightly"),
        display_name="the schedule",
        metadata=[models.BatchMetadataItem(name="team", value="kiln")],
    )
    schedule = sc.get_job_schedule(schedule_id)
    assert (schedule.id, schedule.display_name, schedule.state) == (schedule_id, "the schedule", "active")
    assert schedule.metadata[0].name == "team" and schedule.metadata[0].value == "kiln"
    assert abs(schedule.schedule.do_not_run_until - later) < timedelta(milliseconds=1)
    assert schedule.schedule.start_window == timedelta(hours=1)
    assert schedule.schedule.recurrence_interval == timedelta(hours=2)
    spec = schedule.job_specification
    assert (spec.priority, spec.display_name, spec.pool_info.pool_id) == (10, "nightly", "schedule-pool")
    assert (spec.all_tasks_complete_mode, spec.task_failure_mode, spec.max_parallel_tasks) == (
        "noaction",
        "noaction",
        -1,
    )  # defaults written out
    assert spec.constraints.max_task_retry_count == 0
    info = schedule.execution_info
    assert abs(info.next_run_time - later) < timedelta(milliseconds=1)  # not before doNotRunUntil
    assert info.recent_job is None and info.end_time is None
    assert schedule.etag and schedule.last_modified and schedule.creation_time
    assert schedule.url.endswith(f"/jobschedules/{schedule_id}")
    assert _jobs(sc, schedule_id) == []

    assert schedule_id in [s.id for s in sc.list_job_schedules()]
    assert [s.id for s in sc.list_job_schedules(filter=f"id eq '{schedule_id}'")] == [schedule_id]
    assert [s.id for s in sc.list_job_schedules(filter=f"id eq '{schedule_id}' and state eq 'active'")] == [schedule_id]
    assert sc.job_schedule_exists(schedule_id) is True
    assert sc.job_schedule_exists(schedule_id.upper()) is True  # ids compare without case
    with pytest.raises(ResourceNotFoundError):  # 15.1 raises on 404 (an SDK quirk); the server answers 404
        sc.job_schedule_exists("no-such-schedule")


def test_ids_are_unique_and_shared_with_jobs(sc, spool):
    schedule_id = _create(sc, _every(3600, do_not_run_until=datetime.now(UTC) + timedelta(days=1)))
    with pytest.raises(ResourceExistsError) as info:
        _create(sc, _every(3600), id=schedule_id.upper())
    assert _code(info) == "JobScheduleExists"
    with pytest.raises(ResourceExistsError) as info:
        sc.create_job(models.BatchJobCreateOptions(id=schedule_id, pool_info=models.BatchPoolInfo(pool_id=spool)))
    assert _code(info) == "JobScheduleWithSameIdExists"
    job_id = unique("plainjob")
    sc.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=spool)))
    with pytest.raises(ResourceExistsError) as info:
        _create(sc, _every(3600), id=job_id)
    assert _code(info) == "JobWithSameIdExists"


def test_unknown_schedule_is_job_schedule_not_found(sc):
    calls = [
        lambda: sc.get_job_schedule("nope"),
        lambda: sc.update_job_schedule("nope", models.BatchJobScheduleUpdateOptions(metadata=[])),
        lambda: sc.replace_job_schedule("nope", models.BatchJobSchedule(job_specification=_spec())),
        lambda: sc.disable_job_schedule("nope"),
        lambda: sc.enable_job_schedule("nope"),
        lambda: sc.begin_terminate_job_schedule("nope").result(),
        lambda: sc.begin_delete_job_schedule("nope").result(),
        lambda: list(sc.list_jobs_from_schedule("nope")),
    ]
    for call in calls:
        with pytest.raises(ResourceNotFoundError) as info:
            call()
        assert _code(info) == "JobScheduleNotFound"


@pytest.mark.parametrize(
    ("body", "code", "prop"),
    [
        ({"schedule": {}}, "MissingRequiredProperty", "jobSpecification"),
        ({"jobSpecification": {"poolInfo": {"poolId": "p"}}}, "MissingRequiredProperty", "schedule"),
        ({"schedule": {}, "jobSpecification": {}}, "MissingRequiredProperty", "jobSpecification.poolInfo"),
        (
            {"schedule": {"recurrenceInterval": "PT0.5S"}, "jobSpecification": {"poolInfo": {"poolId": "p"}}},
            "InvalidPropertyValue",
            "schedule.recurrenceInterval",
        ),
        (
            {"schedule": {"startWindow": "PT0.5S"}, "jobSpecification": {"poolInfo": {"poolId": "p"}}},
            "InvalidPropertyValue",
            "schedule.startWindow",
        ),
        (
            {"schedule": {"startWindow": "soon"}, "jobSpecification": {"poolInfo": {"poolId": "p"}}},
            "InvalidPropertyValue",
            "schedule.startWindow",
        ),
        (
            {
                "schedule": {},
                "jobSpecification": {"poolInfo": {"poolId": "p"}, "jobReleaseTask": {"commandLine": "/bin/true"}},
            },
            "InvalidPropertyValue",
            "jobSpecification.jobReleaseTask",
        ),
        (
            {"schedule": {}, "jobSpecification": {"poolInfo": {"poolId": "p"}, "priority": 5000}},
            "InvalidPropertyValue",
            "jobSpecification.priority",
        ),
    ],
    ids=[
        "no-spec",
        "no-schedule",
        "no-pool",
        "short-interval",
        "short-window",
        "bad-window",
        "release-only",
        "priority",
    ],
)
def test_bad_schedules_are_rejected(sc, body, code, prop):
    schedule_id = unique("bad")
    with pytest.raises(HttpResponseError) as info:
        sc.create_job_schedule({"id": schedule_id, **body})
    assert (info.value.status_code, _code(info)) == (400, code)
    assert any(d.code == "PropertyName" and d.message == prop for d in info.value.error.details)
    with pytest.raises(ResourceNotFoundError):
        sc.get_job_schedule(schedule_id)


def test_batch_minimum_interval_is_one_minute_by_default(client):
    """The shared server runs with Batch's limits: a recurrence under a minute is refused."""
    with pytest.raises(HttpResponseError) as info:
        client.create_job_schedule(
            models.BatchJobScheduleCreateOptions(id=unique("short"), schedule=_every(30), job_specification=_spec("p"))
        )
    assert (info.value.status_code, _code(info)) == (400, "InvalidPropertyValue")
    client.create_job_schedule(
        models.BatchJobScheduleCreateOptions(
            id=unique("minute"),
            schedule=_every(60, do_not_run_until=datetime.now(UTC) + timedelta(days=1)),
            job_specification=_spec("p"),
        )
    )


def test_patch_and_put_change_future_jobs_only(sc, spool):
    schedule_id = _create(sc, _every(1), _spec(priority=1), metadata=[models.BatchMetadataItem(name="a", value="b")])
    first = _wait_jobs(sc, schedule_id, 1)[0]
    before = sc.get_job_schedule(schedule_id)
    sc.update_job_schedule(
        schedule_id, models.BatchJobScheduleUpdateOptions(metadata=[models.BatchMetadataItem(name="c", value="d")])
    )
    patched = sc.get_job_schedule(schedule_id)
    assert [(m.name, m.value) for m in patched.metadata] == [("c", "d")]
    assert patched.schedule.recurrence_interval == timedelta(seconds=1)  # PATCH keeps what it did not name
    assert patched.job_specification.priority == 1
    assert patched.etag != before.etag

    with pytest.raises(ResourceModifiedError):
        sc.update_job_schedule(
            schedule_id,
            models.BatchJobScheduleUpdateOptions(metadata=[]),
            etag=before.etag,
            match_condition=MatchConditions.IfNotModified,
        )

    sc.replace_job_schedule(
        schedule_id,
        models.BatchJobSchedule(
            schedule=_every(1), job_specification=_spec(priority=7, all_tasks_complete_mode="terminatejob")
        ),
    )
    replaced = sc.get_job_schedule(schedule_id)
    assert replaced.metadata is None  # PUT: absent metadata is removed
    assert replaced.job_specification.priority == 7
    terminate_job(sc, first.id)  # lets the next occurrence make a job, with the new specification
    second = _wait_jobs(sc, schedule_id, 2)[1]
    assert second.priority == 7 and second.all_tasks_complete_mode == "terminatejob"
    assert sc.get_job(first.id).priority == 1  # the earlier job keeps its specification
    sc.begin_terminate_job_schedule(schedule_id, polling_interval=0.5).result()


# ---------------------------------------------------------------------------------------------- timing
def test_recurring_jobs_are_named_listed_and_reported(sc, spool):
    schedule_id = _create(sc, _every(1), _ends_at_once())
    jobs = _wait_jobs(sc, schedule_id, 3)
    assert [j.id for j in jobs[:3]] == [f"{schedule_id}:job-{n}" for n in (1, 2, 3)]
    assert all(j.pool_info.pool_id == spool and j.execution_info.pool_id == spool for j in jobs)
    job = sc.get_job(f"{schedule_id}:job-1")
    assert job.state == "completed" and job.execution_info.termination_reason == "AllTasksComplete"
    schedule = sc.get_job_schedule(schedule_id)
    recent = schedule.execution_info.recent_job
    assert recent.id in [j.id for j in _jobs(sc, schedule_id)] and recent.url.endswith(f"/jobs/{recent.id}")
    assert int(recent.id.rsplit("-", 1)[1]) >= 3
    assert schedule.execution_info.next_run_time > jobs[2].creation_time
    assert [j.id for j in sc.list_jobs_from_schedule(schedule_id, filter="state eq 'completed'")][:3] == [
        j.id for j in jobs[:3]
    ]
    sc.begin_terminate_job_schedule(schedule_id, polling_interval=0.5).result()
    done = sc.get_job_schedule(schedule_id)
    assert done.state == "completed" and done.execution_info.end_time is not None
    assert done.execution_info.next_run_time is None


def test_a_recurrence_waits_for_the_active_job_and_comes_when_it_ends(sc, spool):
    """At most one active job: occurrences that come while job-1 is active create nothing; its end lets one in."""
    schedule_id = _create(sc, _every(1))
    first = _wait_jobs(sc, schedule_id, 1)[0]
    _wait_next_run_after(sc, schedule_id, first.creation_time + timedelta(seconds=3))
    assert [j.id for j in _jobs(sc, schedule_id)] == [first.id]  # three occurrences passed: no second job
    sc.create_task(first.id, models.BatchTaskCreateOptions(id="work", command_line="/bin/true"))
    wait_tasks_completed(sc, first.id)
    terminate_job(sc, first.id)
    ended = sc.get_job(first.id).execution_info.end_time
    second = _wait_jobs(sc, schedule_id, 2)[1]
    assert second.id == f"{schedule_id}:job-2" and second.creation_time >= ended
    assert len([j for j in _jobs(sc, schedule_id) if j.state != "completed"]) == 1
    sc.begin_terminate_job_schedule(schedule_id, polling_interval=0.5).result()
    assert sc.get_job(second.id).execution_info.termination_reason == "TerminateJobSchedule"


def test_once_without_recurrence_then_completed(sc, spool):
    schedule_id = _create(sc, models.BatchJobScheduleConfiguration(), _spec())
    job = _wait_jobs(sc, schedule_id, 1)[0]
    assert job.id == f"{schedule_id}:job-1"
    assert sc.get_job_schedule(schedule_id).state == "active"  # until its one job finishes
    terminate_job(sc, job.id)
    wait_for(lambda: sc.get_job_schedule(schedule_id).state == "completed", 30, "schedule completed")
    schedule = sc.get_job_schedule(schedule_id)
    assert schedule.execution_info.end_time >= sc.get_job(job.id).execution_info.end_time
    assert schedule.execution_info.recent_job.id == job.id
    assert [j.id for j in _jobs(sc, schedule_id)] == [job.id]


def test_do_not_run_after_in_the_past_completes_without_jobs(sc, spool):
    schedule_id = _create(sc, _every(1, do_not_run_after=datetime.now(UTC) - timedelta(seconds=1)))
    schedule = sc.get_job_schedule(schedule_id)
    assert schedule.state == "completed" and schedule.execution_info.end_time is not None
    assert _jobs(sc, schedule_id) == []


def test_do_not_run_after_ends_a_recurring_schedule(sc, spool):
    stop = datetime.now(UTC) + timedelta(seconds=3)
    schedule_id = _create(sc, _every(1, do_not_run_after=stop), _ends_at_once())
    wait_for(lambda: sc.get_job_schedule(schedule_id).state == "completed", 30, "schedule completed")
    jobs = _jobs(sc, schedule_id)
    assert jobs and all(j.creation_time <= stop for j in jobs)
    assert sc.get_job_schedule(schedule_id).execution_info.end_time >= stop


# ---------------------------------------------------------------------------------------------- states
def test_disable_stops_new_jobs_and_enable_resumes(sc, spool):
    schedule_id = _create(sc, _every(1), _ends_at_once())
    _wait_jobs(sc, schedule_id, 1)
    sc.disable_job_schedule(schedule_id)
    sc.disable_job_schedule(schedule_id)  # again: still disabled
    schedule = sc.get_job_schedule(schedule_id)
    assert (schedule.state, schedule.previous_state) == ("disabled", "active")
    count = len(_jobs(sc, schedule_id))
    _wait_next_run_after(sc, schedule_id, datetime.now(UTC) + timedelta(seconds=2))
    assert len(_jobs(sc, schedule_id)) == count  # occurrences came and went: no job while disabled
    sc.enable_job_schedule(schedule_id)
    assert sc.get_job_schedule(schedule_id).state == "active"
    _wait_jobs(sc, schedule_id, count + 1)
    sc.begin_terminate_job_schedule(schedule_id, polling_interval=0.5).result()


def test_terminate_ends_the_active_job_and_closed_schedules_refuse_changes(sc, spool):
    schedule_id = _create(sc, _every(3600))
    job = _wait_jobs(sc, schedule_id, 1)[0]
    sc.create_task(job.id, models.BatchTaskCreateOptions(id="long", command_line="sleep 60"))
    wait_for(lambda: sc.get_task(job.id, "long").state == "running", 60, "task running")
    sc.begin_terminate_job_schedule(schedule_id, polling_interval=0.5).result()
    schedule = sc.get_job_schedule(schedule_id)
    assert schedule.state == "completed" and schedule.previous_state == "terminating"
    job = sc.get_job(job.id)
    assert job.state == "completed" and job.execution_info.termination_reason == "TerminateJobSchedule"
    assert sc.get_task(job.id, "long").state == "completed"

    for call in (
        lambda: sc.begin_terminate_job_schedule(schedule_id).result(),
        lambda: sc.disable_job_schedule(schedule_id),
        lambda: sc.enable_job_schedule(schedule_id),
        lambda: sc.update_job_schedule(schedule_id, models.BatchJobScheduleUpdateOptions(metadata=[])),
    ):
        with pytest.raises(ResourceExistsError) as info:
            call()
        assert _code(info) == "JobScheduleCompleted"
    assert sc.get_job_schedule(schedule_id).state == "completed"


def test_delete_removes_the_schedule_and_all_its_jobs(sc, spool, marks_dir):
    schedule_id = _create(
        sc,
        _every(3600),
        _spec(
            job_preparation_task=models.BatchJobPreparationTask(command_line="/bin/true"),
            job_release_task=models.BatchJobReleaseTask(command_line=shell(f"touch {marks_dir}/released")),
        ),
    )
    job = _wait_jobs(sc, schedule_id, 1)[0]
    sc.create_task(job.id, models.BatchTaskCreateOptions(id="long", command_line="sleep 60"))
    wait_for(lambda: sc.get_task(job.id, "long").state == "running", 60, "task running")
    sc.begin_delete_job_schedule(schedule_id, polling_interval=0.5).result()
    with pytest.raises(ResourceNotFoundError) as info:
        sc.get_job_schedule(schedule_id)
    assert _code(info) == "JobScheduleNotFound"
    with pytest.raises(ResourceNotFoundError):
        sc.get_job(job.id)
    assert (marks_dir / "released").exists()  # the active job ended with its release task


def test_job_specification_with_preparation_and_release(sc, spool):
    schedule_id = _create(
        sc,
        _every(3600),
        _spec(
            job_preparation_task=models.BatchJobPreparationTask(command_line="/bin/true"),
            job_release_task=models.BatchJobReleaseTask(command_line="/bin/true"),
            common_environment_settings=[models.EnvironmentSetting(name="FROM_SCHEDULE", value="yes")],
        ),
    )
    spec = sc.get_job_schedule(schedule_id).job_specification
    assert spec.job_preparation_task.id == "jobpreparation" and spec.job_preparation_task.wait_for_success is True
    assert spec.job_release_task.id == "jobrelease" and spec.job_release_task.max_wall_clock_time == timedelta(
        minutes=15
    )
    job = _wait_jobs(sc, schedule_id, 1)[0]
    assert job.job_preparation_task.command_line == "/bin/true"
    sc.create_task(job.id, models.BatchTaskCreateOptions(id="env", command_line=shell("test $FROM_SCHEDULE = yes")))
    assert wait_tasks_completed(sc, job.id)[0].execution_info.exit_code == 0
    sc.begin_terminate_job_schedule(schedule_id, polling_interval=0.5).result()
    statuses = list(sc.list_job_preparation_and_release_task_status(job.id))
    assert len(statuses) == 1
    assert statuses[0].job_preparation_task_execution_info.result == "success"
    assert statuses[0].job_release_task_execution_info.result == "success"


# ---------------------------------------------------------------------------------------------- job manager
def _manager(command: str, **fields) -> models.BatchJobManagerTask:
    return models.BatchJobManagerTask(id="manager", command_line=command, **fields)


def _completed_managers(client, jobs: list) -> list:
    """Each job's manager task, once completed with exit code 0."""
    managers = [client.get_task(job.id, "manager") for job in jobs]
    assert [(m.state, m.execution_info.exit_code) for m in managers] == [("completed", 0)] * len(jobs)
    return managers


def test_each_job_runs_its_manager_and_all_tasks_complete_ends_it(sc, spool, marks_dir):
    """onAllTasksComplete=terminatejob: each job runs its manager (after the job's preparation, with the job's
    environment), completes after it, and only then does the next occurrence make the next job."""
    script = f"umask 0; echo $AZ_BATCH_JOB_ID >> {marks_dir}/managed; echo managed by $FROM_SCHEDULE"
    schedule_id = _create(
        sc,
        _every(1),
        _ends_at_once(
            job_manager_task=_manager(shell(script), kill_job_on_completion=False),
            job_preparation_task=models.BatchJobPreparationTask(command_line=shell(f"touch {marks_dir}/prepared")),
            common_environment_settings=[models.EnvironmentSetting(name="FROM_SCHEDULE", value="the schedule")],
        ),
    )
    jobs = _wait_jobs(sc, schedule_id, 3)[:2]  # one job at a time: job-3 means job-1 and job-2 have completed
    for job, manager in zip(jobs, _completed_managers(sc, jobs), strict=True):
        job = sc.get_job(job.id)
        assert (job.state, job.execution_info.termination_reason) == ("completed", "AllTasksComplete")
        assert job.execution_info.end_time >= manager.execution_info.end_time
        assert read_task_file(sc, job.id, "manager", "stdout.txt") == "managed by the schedule\n"
    assert (marks_dir / "managed").read_text().split()[:2] == [job.id for job in jobs]
    assert (marks_dir / "prepared").exists()
    sc.begin_terminate_job_schedule(schedule_id, polling_interval=0.5).result()


def test_a_manager_that_kills_its_job_on_completion_lets_the_schedule_move_on(sc, spool):
    """killJobOnCompletion (default true), onAllTasksComplete noaction: the manager's end ends the job (JMComplete)."""
    schedule_id = _create(sc, _every(1), _spec(job_manager_task=_manager("/bin/true")))
    first, second = _wait_jobs(sc, schedule_id, 2)[:2]
    (manager,) = _completed_managers(sc, [first])
    first = sc.get_job(first.id)
    assert (first.state, first.execution_info.termination_reason) == ("completed", "JMComplete")
    assert second.creation_time >= first.execution_info.end_time >= manager.execution_info.end_time
    sc.begin_terminate_job_schedule(schedule_id, polling_interval=0.5).result()


def test_a_schedule_job_is_made_as_a_job_created_with_its_specification(sc, spool):
    """The whole jobSpecification carries over: the job and its manager task read as those of a job created
    directly with the same fields."""
    fields = {
        "display_name": "from a spec",
        "priority": 5,
        "max_parallel_tasks": 3,
        "uses_task_dependencies": True,
        "task_failure_mode": "performexitoptionsjobaction",
        "constraints": models.BatchJobConstraints(max_task_retry_count=2),
        "job_manager_task": _manager(
            "/bin/true",
            run_exclusive=False,
            environment_settings=[models.EnvironmentSetting(name="M", value="1")],
            constraints=models.BatchTaskConstraints(retention_time=timedelta(hours=1)),
        ),
        "job_preparation_task": models.BatchJobPreparationTask(command_line="/bin/true"),
        "job_release_task": models.BatchJobReleaseTask(command_line="/bin/true"),
        "common_environment_settings": [models.EnvironmentSetting(name="E", value="2")],
        "metadata": [models.BatchMetadataItem(name="k", value="v")],
    }
    schedule_id = _create(sc, _every(3600), _spec(**fields))
    scheduled = _wait_jobs(sc, schedule_id, 1)[0].id
    direct = unique("direct")
    sc.create_job(models.BatchJobCreateOptions(id=direct, pool_info=models.BatchPoolInfo(pool_id=spool), **fields))
    for job_id in (scheduled, direct):
        wait_job_state(sc, job_id, "completed")  # JMComplete

    def shown(doc, *volatile: str) -> dict:
        return {k: v for k, v in doc.as_dict().items() if k not in volatile}

    entity = ("id", "url", "eTag", "lastModified", "creationTime", "executionInfo", "stats")
    entity += ("stateTransitionTime", "previousStateTransitionTime")
    assert shown(sc.get_job(scheduled), *entity) == shown(sc.get_job(direct), *entity)
    assert shown(sc.get_task(scheduled, "manager"), *entity, "nodeInfo") == shown(
        sc.get_task(direct, "manager"), *entity, "nodeInfo"
    )
    sc.begin_delete_job(direct, polling_interval=0.5).result()
    sc.begin_terminate_job_schedule(schedule_id, polling_interval=0.5).result()


# ---------------------------------------------------------------------------------------------- auto pools
def _auto(lifetime: str, keep_alive: bool = False) -> models.BatchPoolInfo:
    return models.BatchPoolInfo(
        auto_pool_specification=models.BatchAutoPoolSpecification(
            auto_pool_id_prefix="sched",
            pool_lifetime_option=lifetime,
            keep_alive=keep_alive,
            pool=models.BatchPoolSpecification(
                vm_size="STANDARD_A1_v2", target_dedicated_nodes=1, virtual_machine_configuration=UBUNTU
            ),
        )
    )


def _pool_ids(client) -> set[str]:
    return {p.id for p in client.list_pools()}


def test_auto_pool_for_the_schedule_is_shared_by_its_jobs_and_goes_with_it(sc):
    schedule_id = _create(sc, _every(1), _spec(pool_info=_auto("jobschedule"), all_tasks_complete_mode="noaction"))
    first = _wait_jobs(sc, schedule_id, 1)[0]
    pool_id = first.execution_info.pool_id
    assert pool_id.startswith("sched_") and pool_id in _pool_ids(sc)
    sc.create_task(first.id, models.BatchTaskCreateOptions(id="t", command_line="/bin/true"))
    assert wait_tasks_completed(sc, first.id)[0].node_info.pool_id == pool_id
    terminate_job(sc, first.id)
    second = _wait_jobs(sc, schedule_id, 2)[1]
    assert second.execution_info.pool_id == pool_id  # one pool for the schedule's lifetime
    assert pool_id in _pool_ids(sc)  # the job ended; the schedule's pool stays
    sc.begin_terminate_job_schedule(schedule_id, polling_interval=0.5).result()
    wait_for(lambda: pool_id not in _pool_ids(sc), 60, "schedule's auto pool deleted")


def test_auto_pool_per_job_under_a_schedule(sc):
    schedule_id = _create(sc, _every(1), _spec(pool_info=_auto("job")))
    first = _wait_jobs(sc, schedule_id, 1)[0]
    pool_id = first.execution_info.pool_id
    terminate_job(sc, first.id)
    second = _wait_jobs(sc, schedule_id, 2)[1]
    assert second.execution_info.pool_id != pool_id  # a pool per job
    wait_for(lambda: pool_id not in _pool_ids(sc), 60, "first job's auto pool deleted")
    sc.begin_delete_job_schedule(schedule_id, polling_interval=0.5).result()
    wait_for(lambda: second.execution_info.pool_id not in _pool_ids(sc), 60, "second job's auto pool deleted")


# ---------------------------------------------------------------------------------------------- restart
def test_schedule_survives_a_restart(open_tmp):
    data = open_tmp / "data"
    server = EmbeddedServer(data, env=FAST).start()
    try:
        client = make_client(server)
        schedule_id = _create(client, _every(1), _ends_at_once(pool_info=models.BatchPoolInfo(pool_id="later")))
        waiting = _create(
            client,
            models.BatchJobScheduleConfiguration(do_not_run_until=datetime.now(UTC) + timedelta(seconds=4)),
            _spec("later"),
        )
        made = len(_wait_jobs(client, schedule_id, 2))
        assert server.stop() == 0
        server = EmbeddedServer(data, port=server.port, env=FAST).start()
        client = make_client(server)
        assert client.get_job_schedule(schedule_id).state == "active"
        jobs = _wait_jobs(client, schedule_id, made + 2)  # recurrences go on after the restart
        ids = [j.id for j in jobs]
        assert ids == [f"{schedule_id}:job-{n}" for n in range(1, len(ids) + 1)]  # numbering continues
        job = _wait_jobs(client, waiting, 1)[0]  # its doNotRunUntil passed while the server was down, or after
        assert job.id == f"{waiting}:job-1" and len(_jobs(client, waiting)) == 1
    finally:
        server.stop()
