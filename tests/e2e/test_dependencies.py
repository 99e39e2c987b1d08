"""Task dependencies through the SDK (batch-semantics §6.4): usesTaskDependencies, dependsOn.taskIds and
taskIdRanges, dependencyAction, the limits, and the graph surviving a server restart."""

from __future__ import annotations

import pytest
from azure.batch import models
from azure.core.exceptions import HttpResponseError

from kiln.cli.embedded import EmbeddedServer
from kiln.testing import (
    create_pool_and_wait,
    make_client,
    shell,
    terminate_job,
    unique,
    wait_for,
    wait_job_state,
    wait_tasks_completed,
)

Task = models.BatchTaskCreateOptions


def _job(client, pool: str, **fields) -> str:
    job_id = unique("deps")
    client.create_job(
        models.BatchJobCreateOptions(
            id=job_id,
            pool_info=models.BatchPoolInfo(pool_id=pool),
            uses_task_dependencies=fields.pop("uses", True),
            **fields,
        )
    )
    return job_id


def after(*task_ids: str) -> models.BatchTaskDependencies:
    return models.BatchTaskDependencies(task_ids=list(task_ids))


def over(start: int, end: int) -> models.BatchTaskDependencies:
    return models.BatchTaskDependencies(task_id_ranges=[models.BatchTaskIdRange(start=start, end=end)])


def exits(code: int, **options) -> models.ExitConditions:
    return models.ExitConditions(
        exit_codes=[models.ExitCodeMapping(code=code, exit_options=models.ExitOptions(**options))]
    )


def _add(client, job_id: str, tasks: list) -> None:
    result = client.create_task_collection(job_id, models.BatchTaskGroup(task_values=tasks))
    assert all(r.status == "success" for r in result.result_values), [r.error for r in result.result_values]


def _started_after_parents(client, job_id: str, child: str, *parents: str) -> None:
    start = client.get_task(job_id, child).execution_info.start_time
    for parent in parents:
        assert client.get_task(job_id, parent).execution_info.end_time <= start, (
            f"{child} started before {parent} ended"
        )


def test_job_uses_task_dependencies_is_stored(client, pool):
    job_id = _job(client, pool)
    assert client.get_job(job_id).uses_task_dependencies is True


def test_chain_runs_in_order_whatever_order_the_tasks_are_added_in(client, pool, marks_dir):
    """Each link fails unless its parent left its mark (every task runs as an account of its own, so one mark each)."""
    job_id = _job(client, pool)
    links = [
        Task(
            id=f"link{i}",
            command_line=shell(f"test -e {marks_dir}/link{i - 1} && touch {marks_dir}/link{i}")
            if i
            else shell(f"touch {marks_dir}/link0"),
            depends_on=after(f"link{i - 1}") if i else None,
        )
        for i in range(5)
    ]
    _add(client, job_id, list(reversed(links)))
    tasks = wait_tasks_completed(client, job_id)
    assert all(t.execution_info.result == "success" for t in tasks)
    for i in range(1, 5):
        _started_after_parents(client, job_id, f"link{i}", f"link{i - 1}")
    task = client.get_task(job_id, "link3")
    assert task.depends_on.task_ids == ["link2"]


def test_fan_in_over_a_task_id_range(client, pool):
    job_id = _job(client, pool)
    parents = [Task(id=str(i), command_line="sleep 0.2") for i in range(1, 9)]
    _add(client, job_id, [Task(id="merge", command_line="/bin/true", depends_on=over(1, 8)), *parents])
    wait_tasks_completed(client, job_id)
    _started_after_parents(client, job_id, "merge", *[p.id for p in parents])
    ranges = client.get_task(job_id, "merge").depends_on.task_id_ranges
    assert [(r.start, r.end) for r in ranges] == [(1, 8)]


def test_range_waits_only_for_tasks_that_exist_and_ignores_other_ids(client, pool):
    job_id = _job(client, pool)
    _add(
        client,
        job_id,
        [
            Task(id="3", command_line="sleep 0.3"),
            Task(id="7", command_line="sleep 0.3"),
            Task(id="5flamingoes", command_line="sleep 30"),
            Task(id="merge", command_line="/bin/true", depends_on=over(1, 10)),
        ],
    )
    wait_for(lambda: client.get_task(job_id, "merge").state == "completed", 60, "merge completed")
    _started_after_parents(client, job_id, "merge", "3", "7")
    assert client.get_task(job_id, "5flamingoes").state == "running"
    terminate_job(client, job_id)


def test_parent_added_later_is_waited_for(client, pool):
    job_id = _job(client, pool)
    client.create_task(job_id, Task(id="child", command_line="/bin/true", depends_on=after("later")))
    client.create_task(job_id, Task(id="other", command_line="/bin/true"))
    wait_for(lambda: client.get_task(job_id, "other").state == "completed", 60, "other completed")
    assert client.get_task(job_id, "child").state == "active"
    client.create_task(job_id, Task(id="later", command_line="sleep 0.2"))
    wait_tasks_completed(client, job_id)
    _started_after_parents(client, job_id, "child", "later")


def test_a_parent_that_completed_before_its_dependent_was_added_releases_it(client, pool):
    """The scheduler forgets a task that completed with satisfy (its job's history is the store's): a dependent
    added afterwards that names it runs, one that also names a task that failed or one that does not exist
    waits."""
    job_id = _job(client, pool)
    _add(client, job_id, [Task(id="done", command_line="/bin/true"), Task(id="failed", command_line=shell("exit 3"))])
    wait_tasks_completed(client, job_id)
    _add(
        client,
        job_id,
        [
            Task(id="child", command_line="/bin/true", depends_on=after("DONE")),
            Task(id="after-failed", command_line="/bin/true", depends_on=after("done", "failed")),
            Task(id="after-missing", command_line="/bin/true", depends_on=after("done", "missing")),
        ],
    )
    wait_for(lambda: client.get_task(job_id, "child").state == "completed", 60, "child completed")
    assert client.get_task(job_id, "child").execution_info.result == "success"
    assert client.get_task(job_id, "after-failed").state == "active"
    assert client.get_task(job_id, "after-missing").state == "active"
    client.create_task(job_id, Task(id="missing", command_line="/bin/true"))
    wait_for(lambda: client.get_task(job_id, "after-missing").state == "completed", 60, "after-missing completed")
    assert client.get_task(job_id, "after-failed").state == "active"


def test_failed_parent_blocks_its_dependents_unless_it_satisfies_them(client, pool):
    job_id = _job(client, pool)
    _add(
        client,
        job_id,
        [
            Task(id="fails", command_line=shell("exit 3")),
            Task(id="blocked", command_line="/bin/true", depends_on=after("fails")),
            Task(
                id="fails-but-satisfies",
                command_line=shell("exit 3"),
                exit_conditions=exits(3, dependency_action="satisfy"),
            ),
            Task(id="released", command_line="/bin/true", depends_on=after("fails-but-satisfies")),
            Task(
                id="succeeds-but-blocks", command_line="/bin/true", exit_conditions=exits(0, dependency_action="block")
            ),
            Task(id="blocked-too", command_line="/bin/true", depends_on=after("succeeds-but-blocks")),
            Task(
                id="default-satisfies",
                command_line=shell("exit 9"),
                exit_conditions=models.ExitConditions(default=models.ExitOptions(dependency_action="satisfy")),
            ),
            Task(id="released-too", command_line="/bin/true", depends_on=after("default-satisfies")),
        ],
    )
    wait_for(
        lambda: all(
            client.get_task(job_id, t).state == "completed"
            for t in ("fails", "released", "succeeds-but-blocks", "released-too")
        ),
        60,
        "the parents and released",
    )
    assert client.get_task(job_id, "fails").execution_info.result == "failure"
    assert client.get_task(job_id, "released").execution_info.result == "success"
    assert client.get_task(job_id, "blocked").state == "active"
    assert client.get_task(job_id, "blocked-too").state == "active"
    counts = client.get_job_task_counts(job_id).task_counts
    assert (counts.active, counts.running) == (2, 0)
    assert client.get_job(job_id).state == "active"


def test_blocked_dependents_keep_a_terminatejob_job_active_and_finished_ones_end_it(client, pool):
    done = _job(client, pool)
    _add(
        client,
        done,
        [Task(id="a", command_line="sleep 0.2"), Task(id="b", command_line="/bin/true", depends_on=after("a"))],
    )
    client.update_job(done, models.BatchJobUpdateOptions(all_tasks_complete_mode="terminatejob"))
    wait_job_state(client, done, "completed")
    assert client.get_job(done).execution_info.termination_reason == "AllTasksComplete"
    assert all(t.execution_info.result == "success" for t in client.list_tasks(done))

    stuck = _job(client, pool)
    _add(
        client,
        stuck,
        [Task(id="a", command_line=shell("exit 1")), Task(id="b", command_line="/bin/true", depends_on=after("a"))],
    )
    wait_for(lambda: client.get_task(stuck, "a").state == "completed", 60, "a completed")
    client.update_job(stuck, models.BatchJobUpdateOptions(all_tasks_complete_mode="terminatejob"))
    wait_for(lambda: client.get_job_task_counts(stuck).task_counts.completed == 1, 10, "counts")
    assert client.get_job(stuck).state == "active"  # b waits for ever, as on Azure
    assert client.get_task(stuck, "b").state == "active"
    terminate_job(client, stuck)


def test_deleting_the_blocking_parent_of_a_range_releases_the_dependent(client, pool):
    job_id = _job(client, pool)
    _add(
        client,
        job_id,
        [
            Task(id="1", command_line="/bin/true"),
            Task(id="2", command_line=shell("exit 1")),
            Task(id="merge", command_line="/bin/true", depends_on=over(1, 2)),
        ],
    )
    wait_for(lambda: client.get_task(job_id, "2").state == "completed", 60, "2 completed")
    assert client.get_task(job_id, "merge").state == "active"
    client.delete_task(job_id, "2")
    wait_for(lambda: client.get_task(job_id, "merge").state == "completed", 60, "merge completed")


def test_terminating_a_parent_blocks_and_terminating_a_waiting_child_completes_it(client, pool):
    job_id = _job(client, pool)
    _add(
        client,
        job_id,
        [
            Task(id="parent", command_line="sleep 60"),
            Task(id="child", command_line="/bin/true", depends_on=after("parent")),
            Task(id="waiting", command_line="/bin/true", depends_on=after("child")),
        ],
    )
    wait_for(lambda: client.get_task(job_id, "parent").state == "running", 60, "parent running")
    client.terminate_task(job_id, "parent")
    assert client.get_task(job_id, "child").state == "active"  # a terminated task is a failure: block
    client.terminate_task(job_id, "child")
    child = client.get_task(job_id, "child")
    assert child.state == "completed" and child.execution_info.failure_info.code == "TaskEnded"
    assert client.get_task(job_id, "waiting").state == "active"


def test_depends_on_needs_uses_task_dependencies(client, pool):
    job_id = _job(client, pool, uses=False)
    with pytest.raises(HttpResponseError) as caught:
        client.create_task(job_id, Task(id="c", command_line="/bin/true", depends_on=after("p")))
    assert caught.value.status_code == 400 and caught.value.error.code == "TaskDependenciesNotSpecifiedOnJob"
    result = client.create_task_collection(
        job_id,
        models.BatchTaskGroup(
            task_values=[
                Task(id="p", command_line="/bin/true"),
                Task(id="c", command_line="/bin/true", depends_on=after("p")),
            ]
        ),
    )
    by_id = {r.task_id: r for r in result.result_values}
    assert by_id["p"].status == "success"
    assert by_id["c"].status == "clienterror" and by_id["c"].error.code == "TaskDependenciesNotSpecifiedOnJob"
    with pytest.raises(HttpResponseError) as caught:
        client.create_task(
            job_id, Task(id="d", command_line="/bin/true", exit_conditions=exits(1, dependency_action="satisfy"))
        )
    assert caught.value.status_code == 400 and caught.value.error.code == "InvalidPropertyValue"
    assert [t.id for t in client.list_tasks(job_id)] == ["p"]


@pytest.mark.parametrize(
    ("depends_on", "code"),
    [
        (after(*[f"{i:064d}" for i in range(1001)]), "TaskDependencyListTooLong"),  # 64,064 characters of ids
        (
            models.BatchTaskDependencies(
                task_id_ranges=[models.BatchTaskIdRange(start=10**6 + i, end=10**6 + i) for i in range(5000)]
            ),
            "TaskDependencyRangesTooLong",
        ),
        (over(5, 4), "InvalidPropertyValue"),
        (after("bad id"), "InvalidPropertyValue"),
        (after("me"), "InvalidPropertyValue"),  # a task cannot depend on itself
    ],
)
def test_bad_dependencies_are_400(client, pool, depends_on, code):
    job_id = _job(client, pool)
    with pytest.raises(HttpResponseError) as caught:
        client.create_task(job_id, Task(id="me", command_line="/bin/true", depends_on=depends_on))
    assert caught.value.status_code == 400 and caught.value.error.code == code
    assert list(client.list_tasks(job_id)) == []


def test_dependencies_survive_a_restart(open_tmp, marks_dir):
    """A chain and a fan-in that wait while the server is down carry on afterwards, in order. Parents that
    completed with satisfy before the restart are the store's alone (core.dependencies.Rebuild): a dependent
    naming one is released once its other parent completes, and an integer they met stays met when another
    task with it ("010") is added afterwards."""
    data = open_tmp / "data"
    server = EmbeddedServer(data).start()
    try:
        client = make_client(server)
        pool_id = create_pool_and_wait(client, nodes=1, slots=2, pool_id="deps-restart")
        job_id = _job(client, pool_id)
        gate = marks_dir / "gate"

        def mark(me: str, *parents: str) -> str:  # fails unless every parent left its mark first
            return shell("".join(f"test -e {marks_dir}/{p} && " for p in parents) + f"touch {marks_dir}/{me}")

        _add(
            client,
            job_id,
            [
                Task(id="1", command_line=shell(f"while [ ! -e {gate} ]; do sleep 0.1; done; touch {marks_dir}/1")),
                Task(id="2", command_line=mark("2", "1"), depends_on=after("1")),
                Task(id="3", command_line=mark("3", "2"), depends_on=after("2")),
                Task(id="fails", command_line=shell("exit 1")),
                Task(id="blocked", command_line="/bin/true", depends_on=after("fails")),
                Task(id="merge", command_line=mark("merge", "1", "2", "3"), depends_on=over(1, 3)),
                Task(id="s", command_line="/bin/true"),
                Task(id="10", command_line="/bin/true"),
                Task(id="after-s", command_line=mark("after-s", "3"), depends_on=after("S", "3")),
            ],
        )
        wait_for(
            lambda: (
                all(client.get_task(job_id, t).state == "completed" for t in ("fails", "s", "10"))
                and client.get_task(job_id, "1").state == "running"
            ),
            60,
            "1 running; fails, s and 10 completed",
        )
        assert server.stop() == 0
        gate.touch()
        server = EmbeddedServer(data, port=server.port).start()
        client = make_client(server)
        gate_010 = marks_dir / "gate-010"
        _add(
            client,
            job_id,
            [
                Task(id="010", command_line=shell(f"while [ ! -e {gate_010} ]; do sleep 0.1; done")),
                Task(id="ten", command_line="/bin/true", depends_on=over(10, 10)),  # met by "10" already
            ],
        )
        wait_for(lambda: client.get_task(job_id, "ten").state == "completed", 60, "ten completed")
        assert client.get_task(job_id, "010").state != "completed"
        gate_010.touch()
        for task_id in ("merge", "after-s", "010"):
            wait_for(lambda t=task_id: client.get_task(job_id, t).state == "completed", 120, f"{task_id} completed")
        done = ("1", "2", "3", "merge", "after-s", "ten", "010")
        assert all(client.get_task(job_id, t).execution_info.result == "success" for t in done)
        assert client.get_task(job_id, "1").execution_info.requeue_count == 1
        assert client.get_task(job_id, "blocked").state == "active"
    finally:
        server.stop()
