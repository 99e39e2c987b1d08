"""Tasks sent ahead to full nodes (scheduler/ahead.py) look to a user exactly like tasks placed when a
slot frees: active until they start, then running with nodeInfo; never more than taskSlotsPerNode at once;
and a disable, terminate or lost node keeps them from starting. Tasks hold their slots on gate files the
test creates, so nothing depends on timing."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from azure.batch import models

from kiln.testing import create_pool_and_wait, shell, task_story, unique, wait_for, wait_tasks_completed


@pytest.fixture
def one_slot_pool(client, cleanup) -> str:
    pool_id = create_pool_and_wait(client, nodes=1, slots=1)
    cleanup(pool=pool_id)
    return pool_id


@pytest.fixture
def job(client, cleanup) -> Callable[[str], str]:
    def make(pool_id: str) -> str:
        job_id = unique("ahead")
        client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id)))
        cleanup(job=job_id)
        return job_id

    return make


def gated(marks: Path, gate: str) -> str:
    """Leaves marks/<task id> when it starts, then waits for marks/<gate>."""
    return shell(
        f"umask 0; date +%s.%N > {marks}/$AZ_BATCH_TASK_ID; while [ ! -e {marks}/{gate} ]; do sleep 0.05; done"
    )


def add(client, job_id: str, **commands: str) -> None:
    client.create_task_collection(
        job_id,
        models.BatchTaskGroup(
            task_values=[
                models.BatchTaskCreateOptions(id=task_id, command_line=command) for task_id, command in commands.items()
            ]
        ),
    )


def state(client, job_id: str, task_id: str) -> str:
    return client.get_task(job_id, task_id).state


def stays(condition: Callable[[], bool], seconds: float = 1.0) -> bool:
    """The condition holds throughout (a negative can only be watched for a while)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not condition():
            return False
        time.sleep(0.05)
    return True


def test_the_next_task_runs_when_the_slot_frees_and_shows_running(client, one_slot_pool, job, marks_dir):
    job_id = job(one_slot_pool)
    add(client, job_id, first=gated(marks_dir, "go1"), second=gated(marks_dir, "go2"))
    wait_for(lambda: state(client, job_id, "first") == "running", 60, "the first task to run")
    assert stays(lambda: state(client, job_id, "second") == "active" and not (marks_dir / "second").exists())
    (marks_dir / "go1").touch()
    second = wait_for(
        lambda: (t := client.get_task(job_id, "second")).state == "running" and t,
        60,
        "the second task to show running while it runs",
    )
    assert not (marks_dir / "go2").exists()  # it cannot have ended: it is running, as it shows
    first = client.get_task(job_id, "first")
    assert first.state == "completed" and first.execution_info.exit_code == 0
    assert second.node_info.node_id == first.node_info.node_id and second.node_info.pool_id == one_slot_pool
    assert second.execution_info.start_time >= first.execution_info.end_time  # one slot: no overlap
    (marks_dir / "go2").touch()
    done = {t.id: t for t in wait_tasks_completed(client, job_id)}
    assert done["second"].execution_info.exit_code == 0 and done["second"].execution_info.requeue_count == 0
    node = client.get_node(one_slot_pool, first.node_info.node_id)
    assert node.total_tasks_run >= 2 and node.total_tasks_succeeded >= 2


@pytest.mark.parametrize("idle_jobs", [0, 1])
def test_no_more_tasks_than_slots_run_at_once(client, cleanup, job, idle_jobs):
    """Also with a second active job that has no tasks (tasks are sent ahead beside it)."""
    pool_id = create_pool_and_wait(client, nodes=2, slots=2)
    cleanup(pool=pool_id)
    for _ in range(idle_jobs):
        job(pool_id)
    job_id = job(pool_id)
    client.create_task_collection(
        job_id,
        models.BatchTaskGroup(
            task_values=[
                models.BatchTaskCreateOptions(id=f"t{i:02d}", command_line=shell("sleep 0.0$((RANDOM % 5))"))
                for i in range(60)
            ]
        ),
    )
    assert_at_most_slots(wait_tasks_completed(client, job_id), 2)


def assert_at_most_slots(done: list, slots: int) -> None:
    """No node ran more than `slots` of these tasks at once (by their start and end times)."""
    assert all(t.execution_info.exit_code == 0 for t in done)
    for node_id in {t.node_info.node_id for t in done}:
        events = sorted(
            (moment, change)
            for t in done
            if t.node_info.node_id == node_id
            for moment, change in ((t.execution_info.start_time, 1), (t.execution_info.end_time, -1))
        )
        running, most = 0, 0
        for _, change in events:  # an end sorts before a start at the same moment
            running += change
            most = max(most, running)
        assert most <= slots, f"{most} tasks ran at once on {node_id}, which has {slots} slots"


def test_a_disabled_job_starts_no_more_tasks(client, one_slot_pool, job, marks_dir):
    job_id = job(one_slot_pool)
    add(client, job_id, first=gated(marks_dir, "go"), second=shell(f"touch {marks_dir}/second"))
    wait_for(lambda: state(client, job_id, "first") == "running", 60, "the first task to run")
    client.begin_disable_job(job_id, models.BatchJobDisableOptions(disable_tasks="wait"))
    (marks_dir / "go").touch()  # the running task ends on its own; the next must not start
    wait_for(lambda: client.get_job(job_id).state == "disabled", 60, "the job to be disabled")
    assert stays(lambda: state(client, job_id, "second") == "active" and not (marks_dir / "second").exists())
    client.begin_enable_job(job_id, polling_interval=1).result()
    done = {t.id: t for t in wait_tasks_completed(client, job_id)}
    assert done["second"].execution_info.exit_code == 0 and (marks_dir / "second").exists()


def test_a_terminated_waiting_task_never_starts(client, one_slot_pool, job, marks_dir):
    job_id = job(one_slot_pool)
    add(client, job_id, first=gated(marks_dir, "go"), second=shell(f"touch {marks_dir}/second"))
    wait_for(lambda: state(client, job_id, "first") == "running", 60, "the first task to run")
    client.terminate_task(job_id, "second")
    (marks_dir / "go").touch()
    done = {t.id: t for t in wait_tasks_completed(client, job_id)}
    assert done["first"].execution_info.exit_code == 0
    assert done["second"].execution_info.failure_info.code == "TaskEnded"
    assert done["second"].execution_info.start_time is None
    assert stays(lambda: not (marks_dir / "second").exists())


def test_waiting_tasks_of_a_lost_node_run_once_it_is_back(client, one_slot_pool, job, marks_dir):
    job_id = job(one_slot_pool)
    first_run = marks_dir / "first-run"
    add(
        client,
        job_id,
        first=shell(f"umask 0; if [ -e {first_run} ]; then exit 0; fi; echo $PPID > {first_run}; sleep 60"),
        second=shell(f"umask 0; echo ran >> {marks_dir}/second"),
    )
    wait_for(lambda: first_run.exists() and first_run.read_text().strip(), 60, "the first run to start")
    launcher = int(first_run.read_text())  # the task's parent: the node's launcher, a child of its worker
    os.kill(psutil.Process(launcher).ppid(), signal.SIGKILL)
    done = {t.id: t for t in wait_tasks_completed(client, job_id, timeout=90)}
    assert done["first"].execution_info.requeue_count == 1
    assert all(t.execution_info.exit_code == 0 for t in done.values())
    assert (marks_dir / "second").read_text() == "ran\n"  # once


def test_tasks_sent_ahead_to_a_busy_node_run_on_a_node_that_frees(client, cleanup, job, marks_dir):
    """Two one-slot nodes both busy: four short tasks are sent ahead, two to each. One node frees; the two
    held by the other node, still busy with a long task, must not wait for it: they run on the free one."""
    pool_id = create_pool_and_wait(client, nodes=2, slots=1)
    cleanup(pool=pool_id)
    job_id = job(pool_id)
    add(client, job_id, long=gated(marks_dir, "never"), short=gated(marks_dir, "free"))
    wait_for(lambda: (marks_dir / "long").exists() and (marks_dir / "short").exists(), 60, "both nodes busy")
    add(client, job_id, **{f"quick{i}": "/bin/true" for i in range(4)})
    (marks_dir / "free").touch()
    wait_for(
        lambda: all(state(client, job_id, f"quick{i}") == "completed" for i in range(4)),
        60,
        "the tasks sent ahead to the busy node ran on the free one",
    )
    assert state(client, job_id, "long") == "running"
    (marks_dir / "never").touch()


def test_every_task_runs_once_while_tasks_sent_ahead_move_between_nodes(client, cleanup, marks_dir):
    """The prep/release sample's shape (two one-slot nodes, a preparation task, eight instant tasks), job after
    job: slots keep freeing on one node while the other holds tasks sent ahead, which move to the free slot
    unless their node has started them in the moment before. Before withdrawal, a task started that way was
    killed and run again elsewhere (one in two runs of `kiln demo` under load)."""
    pool_id = create_pool_and_wait(client, nodes=2, slots=1)
    cleanup(pool=pool_id)
    for round_ in range(6):
        job_id = unique("once")
        client.create_job(
            models.BatchJobCreateOptions(
                id=job_id,
                pool_info=models.BatchPoolInfo(pool_id=pool_id),
                job_preparation_task=models.BatchJobPreparationTask(command_line="/bin/true"),
            )
        )
        cleanup(job=job_id)
        runs = marks_dir / f"runs{round_}"
        add(client, job_id, **{f"task{i}": shell(f"umask 0; echo $AZ_BATCH_TASK_ID >> {runs}") for i in range(8)})
        done = wait_tasks_completed(client, job_id)
        assert all(t.execution_info.exit_code == 0 and t.execution_info.requeue_count == 0 for t in done)
        assert sorted(runs.read_text().split()) == sorted(t.id for t in done), "a task ran more than once"


def counted(marks: Path, gate: str) -> str:
    """Appends its task id to marks/runs as it starts (a run counted once per start), then waits for marks/<gate>."""
    return shell(f"umask 0; echo $AZ_BATCH_TASK_ID >> {marks}/runs; while [ ! -e {marks}/{gate} ]; do sleep 0.05; done")


def sent_ahead(server, job_id: str, task_id: str) -> bool:
    return task_story(server, job_id, task_id)["why"].startswith("sent ahead to node")


def test_tasks_are_sent_ahead_beside_an_idle_job_and_each_runs_once(server, client, one_slot_pool, job, marks_dir):
    """A second active job with no tasks wants no slot: the busy job's next task still goes ahead."""
    job(one_slot_pool)  # idle: active, nothing queued
    job_id = job(one_slot_pool)
    add(client, job_id, first=counted(marks_dir, "go1"), second=counted(marks_dir, "go2"))
    wait_for(lambda: state(client, job_id, "first") == "running", 60, "the first task to run")
    wait_for(lambda: sent_ahead(server, job_id, "second"), 60, "the second task to be sent ahead beside the idle job")
    (marks_dir / "go1").touch()
    wait_for(lambda: state(client, job_id, "second") == "running", 60, "the second task to start")
    (marks_dir / "go2").touch()
    done = {t.id: t for t in wait_tasks_completed(client, job_id)}
    assert all(t.execution_info.exit_code == 0 and t.execution_info.requeue_count == 0 for t in done.values())
    assert done["second"].execution_info.start_time >= done["first"].execution_info.end_time  # one slot
    assert sorted((marks_dir / "runs").read_text().split()) == ["first", "second"]


def test_a_job_of_higher_priority_takes_the_place_sent_ahead(server, client, one_slot_pool, job, marks_dir, cleanup):
    """The task sent ahead is withdrawn, not killed, when a job that placement serves first gets a task: that
    task goes ahead in its place and starts first; every task runs once."""
    low = job(one_slot_pool)
    add(client, low, first=counted(marks_dir, "go"), second=counted(marks_dir, "go"))
    wait_for(lambda: state(client, low, "first") == "running", 60, "the first task to run")
    wait_for(lambda: sent_ahead(server, low, "second"), 60, "the low job's next task to be sent ahead")
    high = unique("urgent")
    client.create_job(
        models.BatchJobCreateOptions(id=high, priority=100, pool_info=models.BatchPoolInfo(pool_id=one_slot_pool))
    )
    cleanup(job=high)
    add(client, high, urgent=counted(marks_dir, "go"))
    wait_for(
        lambda: sent_ahead(server, high, "urgent") and not sent_ahead(server, low, "second"),
        60,
        "the urgent task to go ahead in place of the low job's",
    )
    (marks_dir / "go").touch()
    urgent = wait_tasks_completed(client, high)[0]
    done = {t.id: t for t in wait_tasks_completed(client, low)}
    assert urgent.execution_info.start_time <= done["second"].execution_info.start_time
    assert all(t.execution_info.requeue_count == 0 for t in [urgent, *done.values()])
    assert sorted((marks_dir / "runs").read_text().split()) == ["first", "second", "urgent"]


def test_jobs_taking_turns_send_ahead_in_turn_order(server, client, one_slot_pool, job, marks_dir):
    """jobDefaultOrder none: equal priorities take turns, and tasks go ahead in that order (each one sent ahead
    has taken its job's turn). A, alone, has a2 and a3 ahead while a1 runs. B comes: it joins the line behind
    the turns already taken, so nothing is withdrawn. A's next tasks come after B's: A's queue was empty, so
    A joins behind B. Every task runs once, one at a time, in turn."""
    (marks_dir / "open").touch()
    a = job(one_slot_pool)
    add(client, a, a1=counted(marks_dir, "go"), a2=counted(marks_dir, "open"), a3=counted(marks_dir, "open"))
    wait_for(lambda: state(client, a, "a1") == "running", 60, "a1 to run")
    wait_for(lambda: sent_ahead(server, a, "a2") and sent_ahead(server, a, "a3"), 60, "A's next tasks to go ahead")
    b = job(one_slot_pool)  # the same priority
    add(client, b, b1=counted(marks_dir, "open"), b2=counted(marks_dir, "open"))
    add(client, a, a4=counted(marks_dir, "open"), a5=counted(marks_dir, "open"))
    assert stays(lambda: sent_ahead(server, a, "a2") and sent_ahead(server, a, "a3")), "a turn taken is kept"
    assert not sent_ahead(server, b, "b1")
    (marks_dir / "go").touch()
    done = [*wait_tasks_completed(client, a), *wait_tasks_completed(client, b)]
    assert all(t.execution_info.requeue_count == 0 for t in done)
    assert_at_most_slots(done, 1)
    runs = (marks_dir / "runs").read_text().split()
    assert runs == ["a1", "a2", "a3", "b1", "a4", "b2", "a5"], "each once, the jobs in turn"
