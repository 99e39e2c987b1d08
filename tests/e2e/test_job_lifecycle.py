"""Job and task lifecycle operations through the SDK: disable/enable, update/replace with ETags, list filters,
task update/reactivate/subtasks, and constraints (job wall clock, inherited retries, retention, retry vs requeue)."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.batch import models
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from kiln.cli.embedded import EmbeddedServer
from kiln.testing import (
    create_pool_and_wait,
    make_client,
    read_node_file,
    read_task_file,
    restart_node,
    shell,
    task_file_if_made,
    terminate_job,
    unique,
    wait_for,
    wait_job_state,
    wait_tasks_completed,
)


def _job(pool: str, **fields) -> models.BatchJobCreateOptions:
    return models.BatchJobCreateOptions(
        id=fields.pop("id", unique("life")), pool_info=models.BatchPoolInfo(pool_id=pool), **fields
    )


def _task(task_id: str, command: str, **fields) -> models.BatchTaskCreateOptions:
    return models.BatchTaskCreateOptions(id=task_id, command_line=command, **fields)


def _disable(client, job_id: str, option: str) -> None:
    client.begin_disable_job(job_id, models.BatchJobDisableOptions(disable_tasks=option), polling_interval=1).result()


def _cleaned(client, pool: str, node_id: str, job_id: str, task_id: str) -> bool:
    """The task's directory on the node is gone (retention)."""
    try:
        read_node_file(client, pool, node_id, f"workitems/{job_id}/job-1/{task_id}/stdout.txt")
    except ResourceNotFoundError:
        return True
    return False


def _wait_task(client, job_id: str, task_id: str, state: str, timeout: float = 60):
    return wait_for(
        lambda: (t := client.get_task(job_id, task_id)).state == state and t, timeout, f"task {task_id} {state}"
    )


def _sleeper(marks: Path, name: str) -> str:
    """First run: record its pid and sleep for a minute; any later run exits 0 at once."""
    return shell(
        f"if [ -e {marks}/{name}.ran ]; then exit 0; fi; touch {marks}/{name}.ran; "
        f"echo $$ > {marks}/{name}.pid; exec sleep 60"
    )


def _count_run(marks: Path, name: str) -> str:
    """Shell that leaves one new file per run: a retry may run on another node, as another task account."""
    return f"mktemp {marks}/{name}.XXXXXX > /dev/null"


def _runs(marks: Path, name: str) -> int:
    return len(list(marks.glob(f"{name}.??????")))


def _process_gone(marks: Path, name: str) -> bool:
    pid = int((marks / f"{name}.pid").read_text())
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"  # reaped soon
    except FileNotFoundError:
        return True


@pytest.fixture
def own_pool(client) -> Iterator[str]:
    """One node with one slot of the test's own (for tests that reboot it), deleted afterwards."""
    pool_id = create_pool_and_wait(client, nodes=1, slots=1)
    yield pool_id
    client.begin_delete_pool(pool_id, polling_interval=1).result()


def _code(caught: pytest.ExceptionInfo) -> str:
    return caught.value.error.code


def _run_elsewhere(client, pool: str) -> None:
    """A placement round happens with free slots: another job's task runs to completion."""
    other = _job(pool)
    client.create_job(other)
    client.create_task(other.id, _task("probe", "/bin/true"))
    wait_tasks_completed(client, other.id)


# ------------------------------------------------------------------------------------------ disable and enable
def test_disable_requeue_kills_and_requeues_running_tasks_and_enable_runs_them(client, pool, marks_dir):
    spec = _job(pool)
    client.create_job(spec)
    client.create_task(spec.id, _task("sleeper", _sleeper(marks_dir, "req")))
    _wait_task(client, spec.id, "sleeper", "running")
    wait_for(lambda: (marks_dir / "req.pid").exists(), 30, "pid written")

    _disable(client, spec.id, "requeue")
    job = client.get_job(spec.id)
    assert (job.state, job.previous_state) == ("disabled", "disabling")
    task = client.get_task(spec.id, "sleeper")
    assert task.state == "active" and task.previous_state == "running"
    assert (task.execution_info.requeue_count, task.execution_info.retry_count) == (1, 0)
    assert task.execution_info.last_requeue_time is not None and task.execution_info.last_retry_time is None
    wait_for(lambda: _process_gone(marks_dir, "req"), 30, "the requeued task's process killed")

    client.create_task(spec.id, _task("added-while-disabled", "/bin/true"))  # a disabled job takes tasks
    _run_elsewhere(client, pool)
    assert {t.id: t.state for t in client.list_tasks(spec.id)} == {
        "sleeper": "active",
        "added-while-disabled": "active",
    }
    counts = client.get_job_task_counts(spec.id).task_counts
    assert (counts.active, counts.running) == (2, 0)

    client.begin_enable_job(spec.id, polling_interval=1).result()
    job = client.get_job(spec.id)
    assert (job.state, job.previous_state) == ("active", "enabling")
    tasks = {t.id: t for t in wait_tasks_completed(client, spec.id)}
    assert all(t.execution_info.result == "success" for t in tasks.values())
    assert (tasks["sleeper"].execution_info.requeue_count, tasks["sleeper"].execution_info.retry_count) == (1, 0)


def test_disable_terminate_ends_running_tasks(client, pool, marks_dir):
    spec = _job(pool)
    client.create_job(spec)
    client.create_task(spec.id, _task("sleeper", _sleeper(marks_dir, "term")))
    _wait_task(client, spec.id, "sleeper", "running")
    wait_for(lambda: (marks_dir / "term.pid").exists(), 30, "pid written")

    _disable(client, spec.id, "terminate")
    assert client.get_job(spec.id).state == "disabled"
    task = client.get_task(spec.id, "sleeper")
    assert task.state == "completed" and task.execution_info.result == "failure"
    assert task.execution_info.failure_info.code == "TaskEnded"
    assert (task.execution_info.requeue_count, task.execution_info.retry_count) == (0, 0)
    wait_for(lambda: _process_gone(marks_dir, "term"), 30, "the terminated task's process killed")
    counts = client.get_job_task_counts(spec.id).task_counts
    assert (counts.completed, counts.failed) == (1, 1)


def test_disable_wait_lets_running_tasks_finish(client, pool, marks_dir):
    spec = _job(pool)
    client.create_job(spec)
    client.create_task(
        spec.id, _task("waiter", shell(f"while [ ! -e {marks_dir}/go ]; do sleep 0.1; done; echo finished"))
    )
    _wait_task(client, spec.id, "waiter", "running")

    poller = client.begin_disable_job(spec.id, models.BatchJobDisableOptions(disable_tasks="wait"), polling_interval=1)
    assert client.get_job(spec.id).state == "disabling"  # entered before the reply; the task still runs
    assert client.get_task(spec.id, "waiter").state == "running"
    again = client.begin_disable_job(
        spec.id, models.BatchJobDisableOptions(disable_tasks="wait"), polling_interval=1
    )  # disabling again while disabling is accepted
    assert client.get_job(spec.id).state == "disabling"
    (marks_dir / "go").touch()
    poller.result()
    again.result()
    job = client.get_job(spec.id)
    assert (job.state, job.previous_state) == ("disabled", "disabling")
    task = client.get_task(spec.id, "waiter")
    assert task.state == "completed" and task.execution_info.result == "success"
    assert read_task_file(client, spec.id, "waiter", "stdout.txt") == "finished\n"
    _disable(client, spec.id, "requeue")  # disabling a disabled job is accepted and changes nothing
    assert client.get_job(spec.id).state == "disabled"


def test_disable_requeue_takes_back_a_task_waiting_for_its_preparation_task(client, pool, marks_dir):
    spec = _job(
        pool,
        job_preparation_task=models.BatchJobPreparationTask(
            command_line=shell(f"while [ ! -e {marks_dir}/prep-go ]; do sleep 0.1; done")
        ),
    )
    client.create_job(spec)
    client.create_task(spec.id, _task("t", "/bin/true"))
    _wait_task(client, spec.id, "t", "preparing")
    _disable(client, spec.id, "requeue")
    task = client.get_task(spec.id, "t")
    assert (task.state, task.previous_state) == ("active", "preparing")
    assert (task.execution_info.requeue_count, task.execution_info.retry_count) == (1, 0)
    (marks_dir / "prep-go").touch()
    client.begin_enable_job(spec.id, polling_interval=1).result()
    done = wait_tasks_completed(client, spec.id)[0]
    assert done.execution_info.result == "success" and done.execution_info.requeue_count == 1


def test_disable_and_enable_in_the_wrong_state_are_409(client, pool):
    spec = _job(pool)
    client.create_job(spec)
    with pytest.raises(ResourceExistsError) as caught:
        client.begin_enable_job(spec.id, polling_interval=1).result()
    assert _code(caught) == "OperationInvalidForCurrentState"
    assert client.get_job(spec.id).state == "active"
    terminate_job(client, spec.id)
    with pytest.raises(ResourceExistsError) as caught:
        _disable(client, spec.id, "requeue")
    assert _code(caught) == "JobCompleted"
    with pytest.raises(ResourceExistsError) as caught:
        client.begin_enable_job(spec.id, polling_interval=1).result()
    assert _code(caught) == "JobCompleted"
    with pytest.raises(ResourceNotFoundError) as caught:
        _disable(client, "no-such-job", "requeue")
    assert _code(caught) == "JobNotFound"
    with pytest.raises(HttpResponseError) as caught:
        client.begin_disable_job(unique("x"), models.BatchJobDisableOptions(disable_tasks="sideways"))
    assert caught.value.status_code == 400


def test_disable_and_enable_honour_if_match(client, pool):
    spec = _job(pool)
    client.create_job(spec)
    etag = client.get_job(spec.id).etag
    with pytest.raises(ResourceModifiedError):
        client.begin_disable_job(
            spec.id,
            models.BatchJobDisableOptions(disable_tasks="requeue"),
            etag="0x8DBADBADBAD",
            match_condition=MatchConditions.IfNotModified,
        )
    assert client.get_job(spec.id).state == "active"
    client.begin_disable_job(
        spec.id,
        models.BatchJobDisableOptions(disable_tasks="requeue"),
        etag=etag,
        match_condition=MatchConditions.IfNotModified,
        polling_interval=1,
    ).result()
    with pytest.raises(ResourceModifiedError):
        client.begin_enable_job(spec.id, etag=etag, match_condition=MatchConditions.IfNotModified)
    assert client.get_job(spec.id).state == "disabled"


def test_list_jobs_filters_on_state(client, pool):
    active, disabled = _job(pool), _job(pool)
    client.create_job(active)
    client.create_job(disabled)
    _disable(client, disabled.id, "requeue")
    in_state = lambda state: {j.id for j in client.list_jobs(filter=f"state eq '{state}'")}  # noqa: E731
    assert active.id in in_state("active") and disabled.id not in in_state("active")
    assert disabled.id in in_state("disabled") and active.id not in in_state("disabled")
    assert disabled.id in {j.id for j in client.list_jobs(filter="state ne 'active'")}
    with pytest.raises(HttpResponseError) as caught:
        list(client.list_jobs(filter="colour eq 'red'"))
    assert caught.value.status_code == 400 and _code(caught) == "InvalidQueryParameterValue"


def test_job_wall_clock_ends_a_disabled_job(client, pool):
    spec = _job(pool, constraints=models.BatchJobConstraints(max_wall_clock_time=datetime.timedelta(seconds=3)))
    client.create_job(spec)
    _disable(client, spec.id, "requeue")
    client.create_task(spec.id, _task("never", "/bin/true"))  # added to the disabled job: it can't start first
    wait_job_state(client, spec.id, "completed", 60)
    job = client.get_job(spec.id)
    assert job.execution_info.termination_reason == "MaxWallClockTimeExpiry"
    assert job.previous_state == "terminating" and job.execution_info.end_time is not None
    assert client.get_task(spec.id, "never").state == "active"  # active tasks stay active and never run


# ------------------------------------------------------------------------------------------ update and replace
def test_replace_resets_what_it_does_not_name_and_patch_keeps_it(client, pool):
    spec = _job(
        pool,
        priority=5,
        max_parallel_tasks=3,
        allow_task_preemption=True,
        constraints=models.BatchJobConstraints(max_task_retry_count=4, max_wall_clock_time=datetime.timedelta(hours=1)),
        metadata=[models.BatchMetadataItem(name="a", value="b")],
    )
    client.create_job(spec)
    client.update_job(spec.id, models.BatchJobUpdateOptions(all_tasks_complete_mode="noaction", priority=9))
    job = client.get_job(spec.id)
    assert (job.priority, job.max_parallel_tasks, job.allow_task_preemption) == (9, 3, True)
    assert job.constraints.max_task_retry_count == 4 and job.metadata[0].value == "b"

    client.replace_job(spec.id, models.BatchJob(pool_info=models.BatchPoolInfo(pool_id=pool)))
    job = client.get_job(spec.id)
    assert (job.priority, job.max_parallel_tasks, job.allow_task_preemption) == (0, -1, False)
    assert job.constraints.max_task_retry_count == 0
    assert job.constraints.max_wall_clock_time > datetime.timedelta(days=10000)  # unlimited
    assert not job.metadata and job.all_tasks_complete_mode == "noaction"
    assert job.pool_info.pool_id == pool


def test_replace_and_update_check_the_etag(client, pool):
    spec = _job(pool)
    client.create_job(spec)
    before = client.get_job(spec.id)
    with pytest.raises(ResourceModifiedError) as caught:
        client.replace_job(
            spec.id,
            models.BatchJob(pool_info=models.BatchPoolInfo(pool_id=pool), priority=50),
            etag="0x8DBADBADBAD",
            match_condition=MatchConditions.IfNotModified,
        )
    assert caught.value.status_code == 412 and _code(caught) == "ConditionNotMet"
    assert client.get_job(spec.id).etag == before.etag
    client.replace_job(
        spec.id,
        models.BatchJob(pool_info=models.BatchPoolInfo(pool_id=pool), priority=50),
        etag=before.etag,
        match_condition=MatchConditions.IfNotModified,
    )
    after = client.get_job(spec.id)
    assert after.priority == 50 and after.etag != before.etag
    with pytest.raises(ResourceModifiedError):  # the old etag no longer matches
        client.update_job(
            spec.id,
            models.BatchJobUpdateOptions(priority=1),
            etag=before.etag,
            match_condition=MatchConditions.IfNotModified,
        )
    assert client.get_job(spec.id).priority == 50


def test_replace_cannot_drop_terminatejob(client, pool):
    spec = _job(pool)
    client.create_job(spec)
    client.create_task(spec.id, _task("t", "sleep 30"))
    client.update_job(spec.id, models.BatchJobUpdateOptions(all_tasks_complete_mode="terminatejob"))
    with pytest.raises(HttpResponseError) as caught:  # a PUT without it means noaction
        client.replace_job(spec.id, models.BatchJob(pool_info=models.BatchPoolInfo(pool_id=pool), priority=3))
    assert caught.value.status_code == 400 and _code(caught) == "InvalidPropertyValue"
    job = client.get_job(spec.id)
    assert job.all_tasks_complete_mode == "terminatejob" and job.priority == 0
    client.replace_job(
        spec.id,
        models.BatchJob(
            pool_info=models.BatchPoolInfo(pool_id=pool), priority=3, all_tasks_complete_mode="terminatejob"
        ),
    )
    assert client.get_job(spec.id).priority == 3
    terminate_job(client, spec.id)


# ------------------------------------------------------------------------------------------ tasks
def test_task_update_replaces_constraints_and_retries_follow_it(client, pool):
    spec = _job(pool, constraints=models.BatchJobConstraints(max_task_retry_count=1))
    client.create_job(spec)
    _disable(client, spec.id, "requeue")  # keep the task active while it is updated
    client.create_task(
        spec.id,
        _task(
            "t",
            shell("exit 3"),
            constraints=models.BatchTaskConstraints(max_task_retry_count=5, retention_time=datetime.timedelta(hours=1)),
        ),
    )
    task = client.get_task(spec.id, "t")
    with pytest.raises(ResourceModifiedError):
        client.replace_task(
            spec.id,
            "t",
            models.BatchTask(constraints=models.BatchTaskConstraints(max_task_retry_count=0)),
            etag="0x8DBADBADBAD",
            match_condition=MatchConditions.IfNotModified,
        )
    assert client.get_task(spec.id, "t").constraints.max_task_retry_count == 5

    client.replace_task(
        spec.id,
        "t",
        models.BatchTask(constraints=models.BatchTaskConstraints(max_task_retry_count=2)),
        etag=task.etag,
        match_condition=MatchConditions.IfNotModified,
    )
    updated = client.get_task(spec.id, "t")
    assert updated.constraints.max_task_retry_count == 2
    assert updated.constraints.retention_time == datetime.timedelta(days=7)  # not named: back to the default
    assert updated.constraints.max_wall_clock_time > datetime.timedelta(days=10000)
    assert updated.etag != task.etag

    client.replace_task(spec.id, "t", models.BatchTask())  # no constraints at all: defaults, the job's retries
    assert client.get_task(spec.id, "t").constraints.max_task_retry_count == 1
    client.replace_task(spec.id, "t", models.BatchTask(constraints=models.BatchTaskConstraints(max_task_retry_count=2)))
    with pytest.raises(HttpResponseError) as caught:
        client.replace_task(
            spec.id, "t", models.BatchTask(constraints=models.BatchTaskConstraints(max_task_retry_count=-2))
        )
    assert caught.value.status_code == 400 and _code(caught) == "InvalidPropertyValue"

    client.begin_enable_job(spec.id, polling_interval=1).result()
    done = wait_tasks_completed(client, spec.id)[0]
    assert (done.execution_info.retry_count, done.execution_info.requeue_count) == (2, 0)
    assert done.execution_info.exit_code == 3


def test_reactivate_runs_a_failed_task_again_with_fresh_retries(client, pool, marks_dir):
    spec = _job(pool)
    client.create_job(spec)
    client.create_task(
        spec.id,
        _task(
            "flaky",
            shell(f"{_count_run(marks_dir, 'flaky')}; if [ -e {marks_dir}/fixed ]; then exit 0; fi; exit 3"),
            constraints=models.BatchTaskConstraints(max_task_retry_count=1),
        ),
    )
    failed = _wait_task(client, spec.id, "flaky", "completed")
    assert failed.execution_info.result == "failure" and failed.execution_info.retry_count == 1
    assert _runs(marks_dir, "flaky") == 2

    _disable(client, spec.id, "requeue")  # so that the reactivated task is seen before it runs again
    client.reactivate_task(spec.id, "flaky")
    again = client.get_task(spec.id, "flaky")
    assert (again.state, again.previous_state) == ("active", "completed")
    assert again.execution_info.retry_count == 0 and again.execution_info.end_time is None
    assert again.execution_info.exit_code is None and again.execution_info.failure_info is None
    assert again.execution_info.result is None
    _run_elsewhere(client, pool)
    assert client.get_task(spec.id, "flaky").state == "active"  # the job is disabled: it waits for enable
    client.begin_enable_job(spec.id, polling_interval=1).result()
    failed = _wait_task(client, spec.id, "flaky", "completed")
    assert _runs(marks_dir, "flaky") == 4  # retries started over: two more runs
    assert failed.execution_info.retry_count == 1 and failed.execution_info.result == "failure"

    (marks_dir / "fixed").touch()
    client.reactivate_task(spec.id, "flaky")
    ok = _wait_task(client, spec.id, "flaky", "completed")
    assert ok.execution_info.result == "success" and ok.execution_info.retry_count == 0
    assert ok.execution_info.exit_code == 0 and ok.execution_info.failure_info is None
    assert ok.execution_info.requeue_count == 0

    with pytest.raises(ResourceExistsError) as caught:
        client.reactivate_task(spec.id, "flaky")
    assert _code(caught) == "TaskSucceeded"
    assert client.get_task(spec.id, "flaky").state == "completed"


def test_reactivate_refuses_unfinished_tasks_and_ended_jobs(client, pool, marks_dir):
    spec = _job(pool)
    client.create_job(spec)
    client.create_task(spec.id, _task("sleeper", _sleeper(marks_dir, "react")))
    _wait_task(client, spec.id, "sleeper", "running")
    with pytest.raises(ResourceExistsError) as caught:
        client.reactivate_task(spec.id, "sleeper")
    assert _code(caught) == "TaskNotCompleted"
    client.terminate_task(spec.id, "sleeper")
    ended = client.get_task(spec.id, "sleeper")
    with pytest.raises(ResourceModifiedError):
        client.reactivate_task(spec.id, "sleeper", etag="0x8DBADBADBAD", match_condition=MatchConditions.IfNotModified)
    terminate_job(client, spec.id)
    with pytest.raises(ResourceExistsError) as caught:
        client.reactivate_task(spec.id, "sleeper")
    assert _code(caught) == "JobCompleted"
    assert client.get_task(spec.id, "sleeper").etag == ended.etag
    with pytest.raises(ResourceNotFoundError) as caught:
        client.reactivate_task(spec.id, "nope")
    assert _code(caught) == "TaskNotFound"


def test_subtasks_of_an_ordinary_task_are_empty(client, pool):
    spec = _job(pool)
    client.create_job(spec)
    client.create_task(spec.id, _task("t", "/bin/true"))
    assert list(client.list_subtasks(spec.id, "t")) == []
    wait_tasks_completed(client, spec.id)
    assert list(client.list_subtasks(spec.id, "t")) == []
    with pytest.raises(ResourceNotFoundError) as caught:
        list(client.list_subtasks(spec.id, "nope"))
    assert _code(caught) == "TaskNotFound"


# ------------------------------------------------------------------------------------------ constraints
def test_job_retry_count_is_inherited_by_tasks_that_set_none(client, pool, marks_dir):
    spec = _job(pool, constraints=models.BatchJobConstraints(max_task_retry_count=2))
    client.create_job(spec)
    client.create_tasks(
        spec.id,
        [
            _task("inherits", shell(f"{_count_run(marks_dir, 'inherits')}; exit 3")),
            _task(
                "own",
                shell(f"{_count_run(marks_dir, 'own')}; exit 3"),
                constraints=models.BatchTaskConstraints(max_task_retry_count=0),
            ),
        ],
    )
    client.update_job(
        spec.id, models.BatchJobUpdateOptions(constraints=models.BatchJobConstraints(max_task_retry_count=5))
    )  # tasks keep the value they got at add
    tasks = {t.id: t for t in wait_tasks_completed(client, spec.id)}
    assert tasks["inherits"].constraints.max_task_retry_count == 2
    assert tasks["inherits"].execution_info.retry_count == 2
    assert _runs(marks_dir, "inherits") == 3
    assert tasks["own"].constraints.max_task_retry_count == 0
    assert tasks["own"].execution_info.retry_count == 0
    assert _runs(marks_dir, "own") == 1
    assert all(t.execution_info.requeue_count == 0 for t in tasks.values())


def test_retries_and_requeues_are_counted_apart(client, pool, marks_dir):
    """A non-zero exit is a retry; a disable with requeue is a requeue. Each has its own count and time."""
    spec = _job(pool)
    client.create_job(spec)
    client.create_task(
        spec.id,
        _task(
            "both",
            shell(
                f"n=$(ls {marks_dir} | grep -c '^both[.]'); {_count_run(marks_dir, 'both')}; "
                f"if [ $n = 0 ]; then exit 4; fi; if [ $n = 1 ]; then exec sleep 60; fi; exit 0"
            ),
            constraints=models.BatchTaskConstraints(max_task_retry_count=3),
        ),
    )
    wait_for(
        lambda: _runs(marks_dir, "both") == 2 and client.get_task(spec.id, "both").state == "running",
        60,
        "second run sleeping",
    )
    _disable(client, spec.id, "requeue")
    client.begin_enable_job(spec.id, polling_interval=1).result()
    done = wait_tasks_completed(client, spec.id)[0]
    info = done.execution_info
    assert (info.retry_count, info.requeue_count, info.result) == (1, 1, "success")
    assert info.last_retry_time is not None and info.last_requeue_time is not None
    assert info.last_retry_time < info.last_requeue_time


def test_a_node_reboot_with_requeue_is_a_requeue_not_a_retry(client, own_pool, marks_dir):
    spec = _job(own_pool)
    client.create_job(spec)
    client.create_task(
        spec.id,
        _task(
            "sleeper", _sleeper(marks_dir, "reboot"), constraints=models.BatchTaskConstraints(max_task_retry_count=2)
        ),
    )
    node_id = _wait_task(client, spec.id, "sleeper", "running").node_info.node_id
    restart_node(client, own_pool, node_id).result()
    done = _wait_task(client, spec.id, "sleeper", "completed", 120)
    info = done.execution_info
    assert (info.requeue_count, info.retry_count, info.result) == (1, 0, "success")
    assert info.last_requeue_time is not None and info.last_retry_time is None
    client.begin_delete_job(spec.id, polling_interval=1).result()


def test_task_retention_time_removes_the_directory_after_completion(client, pool, marks_dir):
    spec = _job(pool)
    client.create_job(spec)
    client.create_task(
        spec.id,
        _task(
            "kept",
            shell(f"echo hello; while [ ! -e {marks_dir}/go ]; do sleep 0.1; done; echo bye"),
            constraints=models.BatchTaskConstraints(retention_time=datetime.timedelta(seconds=2)),
        ),
    )
    running = _wait_task(client, spec.id, "kept", "running")
    wait_for(lambda: task_file_if_made(client, spec.id, "kept", "stdout.txt") == "hello\n", 30, "output readable")
    (marks_dir / "go").touch()
    _wait_task(client, spec.id, "kept", "completed")
    node_id = running.node_info.node_id
    wait_for(lambda: _cleaned(client, pool, node_id, spec.id, "kept"), 30, "task directory removed")
    with pytest.raises(ResourceExistsError) as caught:  # a streamed download: the SDK leaves the body unread
        read_task_file(client, spec.id, "kept", "stdout.txt")
    assert caught.value.status_code == 409
    with pytest.raises(ResourceExistsError) as caught:
        list(client.list_task_files(spec.id, "kept"))
    assert _code(caught) == "TaskFilesCleanedup"
    assert client.get_task(spec.id, "kept").execution_info.result == "success"  # the record outlives the files


def test_constraints_updated_while_the_task_runs_decide_how_it_ends(client, pool, marks_dir):
    """The scheduler keeps a running task's row from its dispatch; an update in between must still count:
    a new retry limit ("r" is retried) and a new retentionTime ("k"'s directory goes)."""
    spec = _job(pool)
    client.create_job(spec)
    wait = f"while [ ! -e {marks_dir}/go ]; do sleep 0.1; done"
    client.create_task(spec.id, _task("r", shell(f"echo try >> {marks_dir}/tries; {wait}; exit 3")))
    client.create_task(spec.id, _task("k", shell(f"{wait}; echo done")))
    running = {t: _wait_task(client, spec.id, t, "running") for t in ("r", "k")}
    client.replace_task(spec.id, "r", models.BatchTask(constraints=models.BatchTaskConstraints(max_task_retry_count=1)))
    client.replace_task(
        spec.id,
        "k",
        models.BatchTask(constraints=models.BatchTaskConstraints(retention_time=datetime.timedelta(seconds=1))),
    )
    (marks_dir / "go").touch()
    retried = _wait_task(client, spec.id, "r", "completed")
    assert (retried.execution_info.exit_code, retried.execution_info.retry_count) == (3, 1)
    assert (marks_dir / "tries").read_text() == "try\ntry\n"
    assert _wait_task(client, spec.id, "k", "completed").execution_info.exit_code == 0
    node_id = running["k"].node_info.node_id
    wait_for(
        lambda: _cleaned(client, pool, node_id, spec.id, "k"),
        30,
        "task directory removed after the updated retentionTime",
    )


def test_a_shorter_retention_set_after_completion_applies_from_the_end_time(client, pool):
    spec = _job(pool)
    client.create_job(spec)
    client.create_task(spec.id, _task("t", "/bin/echo kept"))
    done = wait_tasks_completed(client, spec.id)[0]
    assert read_task_file(client, spec.id, "t", "stdout.txt") == "kept\n"  # default P7D: still there
    client.replace_task(
        spec.id,
        "t",
        models.BatchTask(constraints=models.BatchTaskConstraints(retention_time=datetime.timedelta(seconds=1))),
    )
    wait_for(lambda: _cleaned(client, pool, done.node_info.node_id, spec.id, "t"), 30, "task directory removed")
    with pytest.raises(ResourceExistsError) as caught:
        list(client.list_task_files(spec.id, "t"))
    assert _code(caught) == "TaskFilesCleanedup"


def test_a_restart_settles_a_disabling_job_as_disabled(open_tmp, marks_dir):
    """The server dies while a disable waits for a task: on restart the task is requeued and the job disabled."""
    data = open_tmp / "data"
    server = EmbeddedServer(data).start()
    try:
        client = make_client(server)
        pool_id = create_pool_and_wait(client, nodes=1, pool_id="disabling-restart")
        client.create_job(_job(pool_id, id="j"))
        client.create_task("j", _task("sleeper", _sleeper(marks_dir, "restart")))
        _wait_task(client, "j", "sleeper", "running")
        client.begin_disable_job("j", models.BatchJobDisableOptions(disable_tasks="wait"))
        assert client.get_job("j").state == "disabling"
        server.kill()
        server = EmbeddedServer(data, port=server.port).start()
        client = make_client(server)
        job = client.get_job("j")
        assert (job.state, job.previous_state) == ("disabled", "disabling")
        task = client.get_task("j", "sleeper")
        assert task.state == "active" and task.execution_info.requeue_count == 1
        client.begin_enable_job("j", polling_interval=1).result()
        done = wait_tasks_completed(client, "j", timeout=90)[0]
        assert done.execution_info.result == "success" and done.execution_info.retry_count == 0
    finally:
        server.stop()


def test_a_deleted_jobs_retention_spares_a_new_job_of_the_same_id(client, pool, marks_dir):
    """Kept directories go with their job: a job deleted and created again under the same id keeps its running
    task's directory on the same node when the old task's retentionTime passes."""
    spec = _job(pool)
    brief = models.BatchTaskConstraints(retention_time=datetime.timedelta(seconds=3))
    client.create_job(spec)
    client.create_task(spec.id, _task("t", "/bin/echo old", constraints=brief))
    old = wait_tasks_completed(client, spec.id)[0]
    node_id = old.node_info.node_id
    client.begin_delete_job(spec.id, polling_interval=1).result()
    client.create_job(spec)
    affinity = models.BatchAffinityInfo(affinity_id=client.get_node(pool, node_id).affinity_id)
    wait = shell(f"echo new; while [ ! -e {marks_dir}/go ]; do sleep 0.1; done")
    client.create_task(spec.id, _task("t", wait, affinity_info=affinity))
    assert _wait_task(client, spec.id, "t", "running").node_info.node_id == node_id
    witness = _job(pool)  # kept as briefly, ended later: once its directory goes, the old due time has passed
    client.create_job(witness)
    client.create_task(witness.id, _task("w", "/bin/true", constraints=brief, affinity_info=affinity))
    assert wait_tasks_completed(client, witness.id)[0].node_info.node_id == node_id
    wait_for(lambda: _cleaned(client, pool, node_id, witness.id, "w"), 30, "the witness's directory removed")
    assert read_task_file(client, spec.id, "t", "stdout.txt") == "new\n"
    (marks_dir / "go").touch()
    assert _wait_task(client, spec.id, "t", "completed").execution_info.exit_code == 0
    for job_id in (spec.id, witness.id):
        client.begin_delete_job(job_id, polling_interval=1).result()
