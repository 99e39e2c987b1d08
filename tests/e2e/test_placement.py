"""Where and when tasks start (batch-semantics §6.5): slots, spread and pack, job priority and
maxParallelTasks. Placement is observed through each task's nodeInfo and the marks tasks leave; tasks hold
their slots on a gate file the test opens, so nothing depends on timing."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from azure.batch import models
from azure.core.exceptions import HttpResponseError

from kiln.testing import create_pool_and_wait, shell, task_story, unique, wait_for, wait_tasks_completed


# ---------------------------------------------------------------------------------------------- helpers
@pytest.fixture
def own_pool(client, cleanup) -> Callable[..., str]:
    def make(nodes: int, slots: int, fill: str = "spread", order: str | None = None) -> str:
        policy = models.BatchTaskSchedulingPolicy(node_fill_type=fill, job_default_order=order)
        pool_id = create_pool_and_wait(client, nodes=nodes, slots=slots, task_scheduling_policy=policy)
        cleanup(pool=pool_id)
        return pool_id

    return make


def gated(marks: Path, gate: str = "go", record: str = "order") -> str:
    """A command that appends "<job>/<task>" to marks/<record> when it starts, then waits for marks/<gate>.
    (umask 0: tasks run under accounts of their own, and each must be able to append to the shared file.)"""
    return shell(
        f"umask 0; echo $AZ_BATCH_JOB_ID/$AZ_BATCH_TASK_ID >> {marks}/{record}; "
        f"while [ ! -e {marks}/{gate} ]; do sleep 0.05; done"
    )


def add_job(client, pool_id: str, cleanup, **fields) -> str:
    job_id = fields.pop("id", None) or unique("place")
    client.create_job(
        models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id), **fields)
    )
    cleanup(job=job_id)
    return job_id


def add_tasks(client, job_id: str, command: str, n: int, prefix: str = "t", **fields) -> list[str]:
    ids = [f"{prefix}{i}" for i in range(n)]
    client.create_task_collection(
        job_id,
        models.BatchTaskGroup(
            task_values=[models.BatchTaskCreateOptions(id=i, command_line=command, **fields) for i in ids]
        ),
    )
    return ids


def states(client, job_id: str) -> Counter:
    return Counter(t.state for t in client.list_tasks(job_id))


def wait_running(client, job_id: str, n: int) -> list:
    def running():
        tasks = [t for t in client.list_tasks(job_id) if t.state == "running"]
        return tasks if len(tasks) >= n else None

    return wait_for(running, 60, f"{n} running tasks in {job_id}")


def probe(client, pool_id: str, cleanup, priority: int = -1000) -> str:
    """Run one short task of a low-priority job to completion: a placement round has passed over every
    job of the pool with queued tasks, as they all come first."""
    job_id = add_job(client, pool_id, cleanup, priority=priority)
    client.create_task(job_id, models.BatchTaskCreateOptions(id="probe", command_line="/bin/true"))
    wait_tasks_completed(client, job_id)
    return client.get_task(job_id, "probe").node_info.node_id


def started(marks: Path, record: str = "order") -> list[str]:
    path = marks / record
    return path.read_text().split() if path.exists() else []


def wait_started(marks: Path, n: int, record: str = "order") -> list[str]:
    """The marks once n tasks have left theirs (a task is `running` a moment before its process starts)."""
    return wait_for(
        lambda: (lambda seen: seen if len(seen) >= n else None)(started(marks, record)), 60, f"{n} marks in {record}"
    )


# ---------------------------------------------------------------------------------------------- slots
def test_task_needing_more_slots_than_a_node_has_is_accepted_and_stays_active(client, pool, cleanup):
    """As in Azure, requiredSlots above taskSlotsPerNode is not validated: the task is added and never runs,
    while the job's other tasks do."""
    job_id = add_job(client, pool, cleanup)
    client.create_task(job_id, models.BatchTaskCreateOptions(id="huge", command_line="/bin/true", required_slots=3))
    client.create_task(job_id, models.BatchTaskCreateOptions(id="small", command_line="/bin/true"))
    wait_for(lambda: client.get_task(job_id, "small").state == "completed", 60, "small task completed")
    huge = client.get_task(job_id, "huge")
    assert huge.required_slots == 3
    assert huge.state == "active" and huge.node_info is None and huge.execution_info.start_time is None
    counts = client.get_job_task_counts(job_id)
    assert counts.task_counts.active == 1 and counts.task_slot_counts.active == 3


def test_required_slots_are_held_while_a_task_runs(client, pool, own_pool, cleanup, marks_dir):
    """1 node x 3 slots: a 2-slot task and a 1-slot task fill it; a third task waits for a free slot."""
    pool_id = own_pool(nodes=1, slots=3)
    job_id = add_job(client, pool_id, cleanup)
    client.create_task(job_id, models.BatchTaskCreateOptions(id="two", command_line=gated(marks_dir), required_slots=2))
    wait_running(client, job_id, 1)
    add_tasks(client, job_id, gated(marks_dir), 2, prefix="one")
    wait_running(client, job_id, 2)
    probe(client, pool, cleanup)  # a placement round passed (rounds serve every pool)
    assert states(client, job_id) == {"running": 2, "active": 1}  # the node is full: 2 + 1 slots
    node = client.list_nodes(pool_id).next()
    assert node.running_task_slots_count == 3 and node.running_tasks_count == 2
    (marks_dir / "go").touch()
    wait_tasks_completed(client, job_id)


@pytest.mark.parametrize(
    "before, after",
    [(2, 2), (8, 0)],
    ids=["big-between-small-tasks", "big-behind-the-room-ahead"],
)
def test_a_task_needing_the_whole_node_runs_once_the_small_tasks_around_it_end(
    client, own_pool, cleanup, before, after
):
    """1 node x 4 slots, one collection: small tasks, a 4-slot task, small tasks. The small tasks fill the node
    and the big one is sent ahead to it; their slots free one result at a time, which never frees the 4 slots
    the node needs to start it alone, so the control plane must take it back and place it (it once stayed
    active for ever on the idle node). With 8 small tasks first it waits behind a full room ahead."""
    pool_id = own_pool(nodes=1, slots=4)
    job_id = add_job(client, pool_id, cleanup)
    small = [f"small{i}" for i in range(before + after)]
    order = [*small[:before], "big", *small[before:]]
    client.create_task_collection(
        job_id,
        models.BatchTaskGroup(
            task_values=[
                models.BatchTaskCreateOptions(
                    id=task_id, command_line="/bin/sleep 1", required_slots=4 if task_id == "big" else None
                )
                for task_id in order
            ]
        ),
    )
    tasks = {t.id: t for t in wait_tasks_completed(client, job_id, timeout=30)}
    assert all(t.execution_info.exit_code == 0 for t in tasks.values())
    big = tasks["big"].execution_info
    assert big.start_time >= max(tasks[i].execution_info.end_time for i in small)  # alone on the node


def test_a_task_needing_the_whole_node_runs_once_another_jobs_tasks_end(client, own_pool, cleanup):
    """As above with the small tasks in a second job of the pool (nothing is sent ahead then)."""
    pool_id = own_pool(nodes=1, slots=4)
    small_job, big_job = add_job(client, pool_id, cleanup), add_job(client, pool_id, cleanup)
    add_tasks(client, small_job, "/bin/sleep 1", 4, prefix="small")
    client.create_task(big_job, models.BatchTaskCreateOptions(id="big", command_line="/bin/sleep 1", required_slots=4))
    small = wait_tasks_completed(client, small_job, timeout=60)
    big = wait_tasks_completed(client, big_job, timeout=30)[0].execution_info
    assert big.exit_code == 0
    assert big.start_time >= max(t.execution_info.end_time for t in small)


def test_a_task_needing_more_slots_than_a_node_has_waits_without_holding_up_the_rest(server, client, own_pool, cleanup):
    """Batch does not refuse requiredSlots above taskSlotsPerNode: the task never runs. It must not be sent
    ahead to a node (where it would wait for ever at the head of the node's queue) nor keep others waiting."""
    pool_id = own_pool(nodes=1, slots=2)
    job_id = add_job(client, pool_id, cleanup)
    client.create_task(job_id, models.BatchTaskCreateOptions(id="huge", command_line="/bin/true", required_slots=4))
    small = add_tasks(client, job_id, "/bin/sleep 0.2", 8, prefix="small")

    def small_done() -> bool:
        return all(client.get_task(job_id, t).state == "completed" for t in small)

    wait_for(small_done, 60, "the small tasks completed")
    assert client.get_task(job_id, "huge").state == "active"
    assert task_story(server, job_id, "huge")["why"] == "waiting: needs 4 slots; the pool's nodes have 2 slots each"


# ---------------------------------------------------------------------------------------------- spread / pack
@pytest.mark.parametrize("fill, expected", [("spread", [1, 1]), ("pack", [2])])
def test_node_fill_type_decides_where_tasks_land(client, own_pool, cleanup, marks_dir, fill, expected):
    """2 nodes x 2 slots, two tasks running at once: spread puts one on each node, pack both on one node."""
    pool_id = own_pool(nodes=2, slots=2, fill=fill)
    assert client.get_pool(pool_id).task_scheduling_policy.node_fill_type == fill.capitalize()
    job_id = add_job(client, pool_id, cleanup)
    add_tasks(client, job_id, gated(marks_dir), 2)
    running = wait_running(client, job_id, 2)
    per_node = Counter(t.node_info.node_id for t in running)
    assert sorted(per_node.values()) == expected
    assert sorted(wait_started(marks_dir, 2)) == [f"{job_id}/t0", f"{job_id}/t1"]
    (marks_dir / "go").touch()
    wait_tasks_completed(client, job_id)


def test_pack_fills_a_node_before_using_the_next(client, own_pool, cleanup, marks_dir):
    """Pack with 3 tasks on 2 nodes x 2 slots: one node full (2), the other holds the rest (1)."""
    pool_id = own_pool(nodes=2, slots=2, fill="pack")
    job_id = add_job(client, pool_id, cleanup)
    add_tasks(client, job_id, gated(marks_dir), 3)
    running = wait_running(client, job_id, 3)
    assert sorted(Counter(t.node_info.node_id for t in running).values()) == [1, 2]
    (marks_dir / "go").touch()
    wait_tasks_completed(client, job_id)


# ---------------------------------------------------------------------------------------------- priority
def test_tasks_of_higher_priority_jobs_start_first(client, own_pool, cleanup, marks_dir):
    """1 node x 1 slot held by a gated task; then a low and a high priority job queue a task each
    (the low one first). When the slot frees, the high priority job's task starts first."""
    pool_id = own_pool(nodes=1, slots=1)
    blocker = add_job(client, pool_id, cleanup)
    client.create_task(blocker, models.BatchTaskCreateOptions(id="b", command_line=gated(marks_dir)))
    wait_running(client, blocker, 1)
    low = add_job(client, pool_id, cleanup, priority=-5)
    high = add_job(client, pool_id, cleanup, priority=10)
    client.create_task(low, models.BatchTaskCreateOptions(id="x", command_line=gated(marks_dir)))
    client.create_task(high, models.BatchTaskCreateOptions(id="x", command_line=gated(marks_dir)))
    (marks_dir / "go").touch()
    wait_tasks_completed(client, low)
    assert started(marks_dir) == [f"{blocker}/b", f"{high}/x", f"{low}/x"]
    assert client.get_task(high, "x").execution_info.end_time <= client.get_task(low, "x").execution_info.start_time


def test_priority_patched_while_the_job_runs_applies_to_tasks_not_yet_started(client, own_pool, cleanup, marks_dir):
    """Job A (priority 5) would go before job B (priority 1); B is patched to 10 while its first task runs
    and its second waits, so B's waiting task now starts before A's."""
    pool_id = own_pool(nodes=1, slots=1)
    job_b = add_job(client, pool_id, cleanup, priority=1)
    client.create_task(job_b, models.BatchTaskCreateOptions(id="first", command_line=gated(marks_dir)))
    wait_running(client, job_b, 1)
    job_a = add_job(client, pool_id, cleanup, priority=5)
    client.create_task(job_a, models.BatchTaskCreateOptions(id="a", command_line=gated(marks_dir)))
    client.create_task(job_b, models.BatchTaskCreateOptions(id="second", command_line=gated(marks_dir)))
    client.update_job(job_b, models.BatchJobUpdateOptions(priority=10))
    assert client.get_job(job_b).priority == 10
    (marks_dir / "go").touch()
    wait_tasks_completed(client, job_a)
    wait_tasks_completed(client, job_b)
    assert started(marks_dir) == [f"{job_b}/first", f"{job_b}/second", f"{job_a}/a"]


def test_priority_out_of_range_is_400(client, pool, cleanup):
    for bad in (1001, -1001):
        with pytest.raises(HttpResponseError) as caught:
            add_job(client, pool, cleanup, priority=bad)
        assert caught.value.status_code == 400 and caught.value.error.code == "InvalidPropertyValue"
    job_id = add_job(client, pool, cleanup, priority=1000)
    with pytest.raises(HttpResponseError) as caught:
        client.update_job(job_id, models.BatchJobUpdateOptions(priority=-1001))
    assert caught.value.status_code == 400
    assert client.get_job(job_id).priority == 1000


# ---------------------------------------------------------------------------------------------- maxParallelTasks
def test_max_parallel_tasks_caps_running_tasks_and_can_be_patched(client, own_pool, cleanup, marks_dir):
    """2 nodes x 2 slots, a job of 5 gated tasks with maxParallelTasks 2: two run, three wait although
    slots are free (a lower-priority probe job runs beside them). Patched to 3, a third starts; -1 lifts it."""
    pool_id = own_pool(nodes=2, slots=2)
    job_id = add_job(client, pool_id, cleanup, max_parallel_tasks=2)
    assert client.get_job(job_id).max_parallel_tasks == 2
    add_tasks(client, job_id, gated(marks_dir), 5)
    wait_running(client, job_id, 2)
    probe(client, pool_id, cleanup)
    assert states(client, job_id) == {"running": 2, "active": 3}

    client.update_job(job_id, models.BatchJobUpdateOptions(max_parallel_tasks=3))
    wait_running(client, job_id, 3)
    probe(client, pool_id, cleanup)
    assert states(client, job_id) == {"running": 3, "active": 2}
    assert client.get_job(job_id).max_parallel_tasks == 3

    client.update_job(job_id, models.BatchJobUpdateOptions(max_parallel_tasks=-1))
    wait_running(client, job_id, 4)  # every slot of the pool
    (marks_dir / "go").touch()
    tasks = wait_tasks_completed(client, job_id)
    assert all(t.execution_info.result == "success" for t in tasks)


def test_max_parallel_tasks_counts_tasks_that_finish(client, pool, cleanup, marks_dir):
    """maxParallelTasks 1: the job's tasks run one after another, each starting after the previous ended."""
    job_id = add_job(client, pool, cleanup, max_parallel_tasks=1)
    add_tasks(client, job_id, shell(f"umask 0; echo $AZ_BATCH_TASK_ID >> {marks_dir}/order"), 4)
    tasks = sorted(wait_tasks_completed(client, job_id), key=lambda t: t.execution_info.start_time)
    for before, after in zip(tasks, tasks[1:]):
        assert before.execution_info.end_time <= after.execution_info.start_time
    assert len(started(marks_dir)) == 4


@pytest.mark.parametrize("bad", [0, -2])
def test_invalid_max_parallel_tasks_is_400_and_nothing_changes(client, pool, cleanup, bad):
    with pytest.raises(HttpResponseError) as caught:
        add_job(client, pool, cleanup, max_parallel_tasks=bad)
    assert caught.value.status_code == 400 and caught.value.error.code == "InvalidPropertyValue"
    job_id = add_job(client, pool, cleanup, max_parallel_tasks=4)
    with pytest.raises(HttpResponseError) as caught:
        client.update_job(job_id, models.BatchJobUpdateOptions(max_parallel_tasks=bad))
    assert caught.value.status_code == 400
    assert client.get_job(job_id).max_parallel_tasks == 4


# ---------------------------------------------------------------------------------------------- preemption
def test_allow_task_preemption_is_stored_returned_and_patchable(client, pool, cleanup):
    job_id = add_job(client, pool, cleanup, allow_task_preemption=True)
    assert client.get_job(job_id).allow_task_preemption is True
    client.update_job(job_id, models.BatchJobUpdateOptions(allow_task_preemption=False))
    assert client.get_job(job_id).allow_task_preemption is False
    other = add_job(client, pool, cleanup)
    assert client.get_job(other).allow_task_preemption is False


@pytest.mark.parametrize("allow", [True, False])
def test_a_higher_priority_job_preempts_running_tasks_of_jobs_that_allow_it(
    client, own_pool, cleanup, marks_dir, allow
):
    """allowTaskPreemption: the lower job's running task is requeued (not retried) to make way, and runs
    again afterwards; without it the higher job waits for the slot."""
    pool_id = own_pool(nodes=1, slots=1)
    low = add_job(client, pool_id, cleanup, priority=0, allow_task_preemption=allow)
    client.create_task(low, models.BatchTaskCreateOptions(id="low", command_line=gated(marks_dir)))
    wait_started(marks_dir, 1)
    high = add_job(client, pool_id, cleanup, priority=100)
    client.create_task(
        high,
        models.BatchTaskCreateOptions(
            id="high", command_line=shell(f"umask 0; echo $AZ_BATCH_JOB_ID/$AZ_BATCH_TASK_ID >> {marks_dir}/order")
        ),
    )
    if allow:
        wait_tasks_completed(client, high)
        assert client.get_task(low, "low").execution_info.requeue_count == 1
    else:
        time.sleep(1.0)  # placement rounds pass; none may take the slot
        assert client.get_task(high, "high").state == "active"
    (marks_dir / "go").touch()
    wait_tasks_completed(client, low)
    wait_tasks_completed(client, high)
    first = client.get_task(low, "low").execution_info
    assert (first.result, first.retry_count, first.requeue_count) == ("success", 0, 1 if allow else 0)
    expected = [f"{low}/low", f"{high}/high", f"{low}/low"] if allow else [f"{low}/low", f"{high}/high"]
    assert started(marks_dir) == expected


def test_job_default_order_creationtime_serves_the_older_of_equal_priority_jobs_first(
    client, own_pool, cleanup, marks_dir
):
    """jobDefaultOrder creationtime: every queued task of the older job starts before the newer job's."""
    pool_id = own_pool(nodes=1, slots=1, order="creationtime")
    blocker = add_job(client, pool_id, cleanup, priority=1)
    client.create_task(blocker, models.BatchTaskCreateOptions(id="b", command_line=gated(marks_dir)))
    wait_running(client, blocker, 1)
    older = add_job(client, pool_id, cleanup)
    newer = add_job(client, pool_id, cleanup)
    add_tasks(client, newer, gated(marks_dir), 2)
    add_tasks(client, older, gated(marks_dir), 2)
    (marks_dir / "go").touch()
    wait_tasks_completed(client, older)
    wait_tasks_completed(client, newer)
    assert started(marks_dir) == [f"{blocker}/b", f"{older}/t0", f"{older}/t1", f"{newer}/t0", f"{newer}/t1"]


def test_job_default_order_none_takes_turns_between_equal_priority_jobs(client, own_pool, cleanup, marks_dir):
    """jobDefaultOrder none (the default): equal-priority jobs take turns, one task each. Both jobs' tasks are
    added while the node takes none (nothing is sent ahead to it), so the first job's cannot take turns before
    the second job comes (a task sent ahead has taken its turn: test_ahead)."""
    pool_id = own_pool(nodes=1, slots=1)
    blocker = add_job(client, pool_id, cleanup, priority=1)
    client.create_task(blocker, models.BatchTaskCreateOptions(id="b", command_line=gated(marks_dir)))
    wait_running(client, blocker, 1)
    (node,) = [n.id for n in client.list_nodes(pool_id)]
    finish = models.BatchNodeDisableSchedulingOptions(node_disable_scheduling_option="taskcompletion")
    client.disable_node_scheduling(pool_id, node, finish)
    first = add_job(client, pool_id, cleanup)
    second = add_job(client, pool_id, cleanup)
    add_tasks(client, first, gated(marks_dir), 2)
    add_tasks(client, second, gated(marks_dir), 2)
    client.enable_node_scheduling(pool_id, node)
    (marks_dir / "go").touch()
    wait_tasks_completed(client, first)
    wait_tasks_completed(client, second)
    jobs_in_order = [mark.split("/")[0] for mark in started(marks_dir)[1:]]
    assert sorted(jobs_in_order) == sorted([first, first, second, second])
    assert jobs_in_order[0] != jobs_in_order[1] and jobs_in_order[2] != jobs_in_order[3]
