"""The control state as data: stimuli in, effects and state out, and its invariants checked after every test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kiln.compute.protocol import StepResult, Withdrawal
from kiln.core import preparation as prep_rules
from kiln.core import task as task_rules
from kiln.core.task import TaskState
from kiln.scheduler.control import ControlState, InvariantBroken
from kiln.scheduler.line import TICKETS
from kiln.scheduler.slots import AHEAD_DEPTH, AHEAD_DEPTH_QUICK, QUICK_TASK, NodeSlots
from kiln.scheduler.state import Dispatch, Effects, JobEntry, StepRef, task_step_id
from kiln.store.kept_dirs import Kept


def job_row(key: str = "j") -> dict:
    return {"key": key, "id": key, "spec": {}, "state": "active", "pool_key": "p", "priority": 0, "seq": 1}


def fresh() -> ControlState:
    state = ControlState()
    for node_id in ("a", "b"):
        state.nodes[node_id] = NodeSlots(node_id, "p", capacity=4, root=f"/r/{node_id}", up=True)
    state.job_tracked(job_row())
    return state


def run_task(state: ControlState, seq: int, node_id: str, *, attempt: int = 1, slots: int = 1) -> str:
    """What a placement round leaves behind for a task it started: its step holds the slots."""
    step_id = task_step_id(seq, attempt)
    state.nodes[node_id].book(step_id, slots)
    state.steps[step_id] = StepRef("task", "j", node_id, attempt, seq, slots)
    return step_id


@pytest.fixture
def state() -> Iterator[ControlState]:
    state = fresh()
    yield state
    state.check()  # every test leaves the state whole


def test_queued_tasks_wait_oldest_first_and_an_unknown_job_queues_nothing(state: ControlState) -> None:
    assert state.tasks_queued("j", [(3, 1), (1, 2), (2, 1)])
    assert not state.tasks_queued("gone", [(9, 1)])
    assert [state.jobs["j"].queue.pop() for _ in range(3)] == [(1, 2), (2, 1), (3, 1)]


def test_a_job_that_starts_wanting_slots_takes_its_turn_after_the_jobs_served_before(state: ControlState) -> None:
    """jobDefaultOrder none: tasks added to a job with none queued put it behind the jobs served before then (a
    task sent ahead has taken its turn, and a newcomer does not come before it); a job with tasks queued keeps
    its turn when more come."""
    state.job_tracked({**job_row("k"), "seq": 2})
    state.tasks_added("j", [(1, 1)])
    j, k = state.jobs["j"], state.jobs["k"]
    j.last_served = served = next(TICKETS)  # j was just served (a task of it placed, or sent ahead)
    state.tasks_added("k", [(2, 1)])
    assert k.last_served > j.last_served
    assert state.line_key("j", "p") < state.line_key("k", "p")  # type: ignore[operator]
    turn = k.last_served
    state.tasks_added("k", [(3, 1)])  # queued already: no new turn
    assert k.last_served == turn
    assert j.queue.pop() == (1, 1)  # j's queue runs dry; a task of it requeued is not a new turn
    assert state.tasks_queued("j", [(1, 1)]) and j.last_served == served


def test_a_step_taken_off_its_node_frees_its_slots_and_is_killed_only_if_asked(state: ControlState) -> None:
    first, second = run_task(state, 1, "a", slots=3), run_task(state, 2, "b")
    effects = Effects()
    assert state.step_off_node("a", first, effects, kill=True) == StepRef("task", "j", "a", 1, 1, 3)
    assert state.step_off_node("b", second, effects, kill=False) is not None
    assert dict(effects.kill) == {"a": [first]}
    assert (state.nodes["a"].used, state.nodes["b"].used, state.steps) == (0, 0, {})
    assert state.step_off_node("a", first, effects, kill=True) is None  # twice: nothing more happens
    assert dict(effects.kill) == {"a": [first]}


def test_a_task_taken_off_its_node_no_longer_waits_for_the_preparation_there(state: ControlState) -> None:
    state.nodes["a"].book(task_step_id(1, 1), 1)  # preparing: it holds its slot, no step runs yet
    state.wait_for_preparation("j", "a", 1)
    run_task(state, 2, "a")
    state.wait_for_preparation("j", "a", 2)
    effects = Effects()
    state.task_off_node("j", "a", 1, 1, effects)
    assert state.waiting == {("j", "a"): [2]} and state.nodes["a"].used == 1
    assert dict(effects.kill) == {}  # its process never started


def test_an_emptied_node_loses_every_step_booking_and_wait(state: ControlState) -> None:
    running = run_task(state, 1, "a", slots=2)
    state.steps["p:j:a:1"] = StepRef("prep", "j", "a", 1)
    state.nodes["a"].book(task_step_id(2, 1), 1)
    state.wait_for_preparation("j", "a", 2)
    ahead = task_step_id(3, 1)
    state.steps[ahead] = StepRef("task", "j", "a", 1, 3, 1, ahead=True)
    state.nodes["a"].ahead[ahead] = ("j", 3, 1)
    elsewhere = run_task(state, 4, "b")
    effects = Effects()
    gone = state.node_emptied("a", effects, kill=True)
    assert sorted(ref.seq or 0 for ref in gone) == [0, 1, 3]
    assert sorted(effects.kill["a"]) == sorted([running, "p:j:a:1", ahead])
    node = state.nodes["a"]
    assert (node.used, node.booked, node.ahead, state.waiting) == (0, {}, {}, {})
    assert list(state.steps) == [elsewhere] and state.nodes["b"].used == 1


def test_a_step_sent_ahead_holds_no_slot_until_its_node_starts_it(state: ControlState) -> None:
    ref = StepRef("task", "j", "a", 1, 5, 2, ahead=True)
    state.sent_ahead("t:5:1", ref)
    assert (state.nodes["a"].ahead, state.nodes["a"].used) == ({"t:5:1": ("j", 5, 2)}, 0)
    state.check()
    state.ahead_started("t:5:1", ref, {"seq": 5}, running=True)
    assert (state.nodes["a"].ahead, state.nodes["a"].booked) == ({}, {"t:5:1": 2})
    assert state.steps["t:5:1"] == StepRef("task", "j", "a", 1, 5, 2) and state.steps["t:5:1"].row == {"seq": 5}


def test_a_step_sent_ahead_that_already_ended_is_booked_for_its_result_to_free(state: ControlState) -> None:
    ref = StepRef("task", "j", "a", 1, 5, 1, ahead=True)
    state.sent_ahead("t:5:1", ref)
    assert state.step_ended("t:5:1") == ref  # its result came with the notice that it started
    state.ahead_started("t:5:1", ref, {"seq": 5}, running=False)
    assert "t:5:1" not in state.steps and state.nodes["a"].booked == {"t:5:1": 1}
    state.step_off_node("a", "t:5:1", Effects(), kill=False)  # what its result does next


def test_a_withdrawn_step_is_queued_again_only_if_its_node_gave_it_back(state: ControlState) -> None:
    for seq in (5, 6, 7):
        state.sent_ahead(f"t:{seq}:1", StepRef("task", "j", "a", 1, seq, 1, ahead=True))
    asked = Effects()
    assert state.withdraw("a", ["t:5:1", "t:6:1", "t:7:1"], asked) == ["t:5:1", "t:6:1", "t:7:1"]
    assert state.withdraw("a", ["t:5:1"], asked) == []  # asked once: its answer is on its way
    assert asked.withdraw == {"a": ["t:5:1", "t:6:1", "t:7:1"]}
    state.check()
    effects = Effects()
    answer = Withdrawal(withdrawn=["t:5:1"], started=["t:6:1"])  # t:7:1 had not arrived
    moved = state.withdraw_answered("a", ["t:5:1", "t:6:1", "t:7:1"], answer, effects)
    assert [ref.seq for ref in moved] == [5] and state.jobs["j"].queue.heap == [(5, 1)]
    node = state.nodes["a"]
    assert (set(node.ahead), node.withdrawing) == ({"t:6:1", "t:7:1"}, {"t:6:1"})  # t:6:1 runs: its notice comes
    assert not effects.kill  # nothing the node started is stopped
    state.check()
    state.ahead_started("t:6:1", StepRef("task", "j", "a", 1, 6, 1, ahead=True), {"seq": 6}, running=True)
    assert node.withdrawing == set() and node.booked == {"t:6:1": 1}
    state.step_off_node("a", "t:7:1", effects, kill=True)
    state.step_off_node("a", "t:6:1", effects, kill=True)
    state.jobs["j"].queue.pop()


def test_a_stopped_job_queues_nothing_waits_for_nothing_and_its_preparations_are_killed(state: ControlState) -> None:
    state.job_tracked(job_row("k"))
    state.tasks_queued("j", [(1, 1), (2, 1)])
    state.tasks_queued("k", [(3, 1)])
    state.steps["p:j:a:1"] = StepRef("prep", "j", "a", 1)
    state.steps["p:k:b:1"] = StepRef("prep", "k", "b", 1)
    state.nodes["a"].book(task_step_id(4, 1), 1)
    state.wait_for_preparation("j", "a", 4)
    effects = Effects()
    assert state.job_stopped("j", effects) == [StepRef("prep", "j", "a", 1)]
    assert (len(state.jobs["j"].queue), len(state.jobs["k"].queue), state.waiting) == (0, 1, {})
    assert dict(effects.kill) == {"a": ["p:j:a:1"]} and list(state.steps) == ["p:k:b:1"]
    state.task_off_node("j", "a", 4, 1, effects)  # the caller ends its tasks on nodes one by one


def test_a_forgotten_job_takes_its_records_and_if_removed_its_multi_instance_bookkeeping(state: ControlState) -> None:
    for job_key, node_id, seq in (("j", "a", 1), ("j", "b", 2), ("k", "a", 3)):
        if job_key not in state.jobs:
            state.job_tracked(job_row(job_key))
        state.record_tracked({"job_key": job_key, "node_id": node_id})
        state.instance_count_seen(seq, job_key, 2)
        state.subtask_nodes[seq] = ["b"]
    state.job_forgotten("j", removed=False)  # completed: its tasks stay
    assert (set(state.jobs), list(state.preps), set(state.instance_counts)) == ({"k"}, [("k", "a")], {1, 2, 3})
    state.job_forgotten("j", removed=True)
    assert (set(state.instance_counts), set(state.subtask_nodes)) == ({3}, {3})


def test_a_multi_instance_plan_books_subtask_nodes_until_taken_or_dropped(state: ControlState) -> None:
    a, b = state.nodes["a"], state.nodes["b"]
    a.book(9, 1)  # placement's own tentative booking of the primary
    state.instances_planned(9, [a, b])
    assert (a.booked, b.booked) == ({9: 1}, {9: 1})
    state.instance_plan_dropped(9)
    assert (b.booked, state.instance_plans) == ({}, {})
    state.instances_planned(9, [a, b])
    assert state.instance_plan_taken(9) == [a, b] and b.booked == {9: 1}  # the caller rebooks them
    a.release(9)
    b.release(9)


T0 = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
NOW = T0 + timedelta(minutes=1)


def running_task(seq: int, node_id: str, *, retries: int = 0, **spec: Any) -> dict[str, Any]:
    """A task's row as the store has it while its first attempt runs on `node_id`."""
    doc = {"id": f"t{seq}", "requiredSlots": 1, "constraints": {"maxTaskRetryCount": retries}, **spec}
    row = {**task_rules.new_row("j", doc, now=T0, etag="e"), "seq": seq, "previous_state": None, "result": None}
    row.update(task_rules.transition(row, TaskState.RUNNING, T0, pool_id="p", node_id=node_id, attempt=1))
    return row


def exited(seq: int, code: int | None, **fields: Any) -> StepResult:
    return StepResult(task_step_id(seq, 1), T0.timestamp(), NOW.timestamp(), code, **fields)


def test_a_task_that_exits_0_completes_frees_its_slot_and_has_its_job_checked(state: ControlState) -> None:
    run_task(state, 1, "a")
    task = running_task(1, "a", constraints={"maxTaskRetryCount": 0, "retentionTime": "PT1H"})
    effects = Effects()
    assert not state.task_ended(state.steps[task_step_id(1, 1)], task, exited(1, 0), NOW, effects)
    change = effects.task_changes[1]
    assert (change.state, change.values["state"], change.values["exit_code"]) == ("running", "completed", 0)
    assert change.values["end_time"] == NOW and change.values["failure_info"] is None
    assert (state.nodes["a"].used, state.steps, effects.check_jobs) == (0, {}, {"j"})
    assert effects.node_counters == {("a", "total_tasks_succeeded"): 1}
    assert effects.retain == [Kept("a", "workitems/j/job-1/t1", "j", NOW + timedelta(hours=1))]
    assert dict(effects.kill) == {}  # it exited by itself


def test_a_node_whose_latest_task_was_quick_may_hold_more_rounds_ahead(state: ControlState) -> None:
    node = state.nodes["a"]
    assert not node.quick and node.room_ahead == AHEAD_DEPTH * 4
    for seq, ran in ((1, 0.01), (2, QUICK_TASK + 1), (3, 0.2)):
        run_task(state, seq, "a")
        result = StepResult(task_step_id(seq, 1), T0.timestamp(), T0.timestamp() + ran, 0)
        state.task_ended(state.steps[task_step_id(seq, 1)], running_task(seq, "a"), result, NOW, Effects())
        assert node.quick == (ran < QUICK_TASK)
        assert node.room_ahead == (AHEAD_DEPTH_QUICK if node.quick else AHEAD_DEPTH) * 4


def test_a_failed_task_with_retries_left_is_queued_again_and_one_without_completes_failed(state: ControlState) -> None:
    run_task(state, 1, "a")
    run_task(state, 2, "b")
    effects = Effects()
    state.task_ended(state.steps[task_step_id(1, 1)], running_task(1, "a", retries=1), exited(1, 3), NOW, effects)
    state.task_ended(state.steps[task_step_id(2, 1)], running_task(2, "b"), exited(2, 3), NOW, effects)
    retried, failed = effects.task_changes[1].values, effects.task_changes[2].values
    assert (retried["state"], retried["retry_count"]) == ("active", 1)
    assert (failed["state"], failed["result"], failed["failure_info"]["code"]) == (
        "completed",
        "failure",
        "FailureExitCode",
    )
    assert state.jobs["j"].queue.queued == {1} and effects.check_jobs == {"j"}
    assert effects.node_counters == {}


def test_a_stale_result_only_frees_the_step(state: ControlState) -> None:
    ref = StepRef("task", "j", "a", 1, 1, 1)
    run_task(state, 1, "a")
    moved_on = {**running_task(1, "a"), "attempt": 2}  # requeued and started again meanwhile
    effects = Effects()
    assert not state.task_ended(ref, moved_on, exited(1, 0), NOW, effects)
    assert not state.task_ended(ref, None, exited(1, 0), NOW, effects)  # or deleted
    assert (effects.task_changes, effects.check_jobs, state.nodes["a"].used) == ({}, set(), 0)


def test_a_completed_parent_releases_its_dependents(state: ControlState) -> None:
    state.jobs["j"] = JobEntry({**job_row(), "spec": {"usesTaskDependencies": True}})  # in place of the fixture's
    state.job_changed(state.jobs["j"])
    parent, child = running_task(1, "a"), {"seq": 2, "key": "t2", "id": "t2", "required_slots": 1}
    state.dependent_tasks_added("j", [{**parent, "state": "active", "attempt": 0}])
    state.jobs["j"].queue.pop()
    run_task(state, 1, "a")
    state.dependent_tasks_added("j", [{**child, "spec": {"dependsOn": {"taskIds": ["t1"]}}}])
    assert len(state.jobs["j"].queue) == 0  # it waits for t1
    effects = Effects()
    state.task_ended(state.steps[task_step_id(1, 1)], parent, exited(1, 0), NOW, effects)
    assert state.jobs["j"].queue.queued == {2} and effects.wake


def test_the_end_of_a_multi_instance_task_kills_every_instance(state: ControlState) -> None:
    from kiln.scheduler.multi_instance import Instances

    run_task(state, 1, "a")
    state.nodes["b"].book("c:1:1:1", 1)
    state.instance_count_seen(1, "j", 2)
    state.instances_started(Instances("j", 1, 1, ["a", "b"]))
    effects = Effects()
    task = running_task(1, "a", constraints={"maxTaskRetryCount": 0, "retentionTime": "PT1H"})
    assert state.task_ended(state.steps[task_step_id(1, 1)], task, exited(1, 0), NOW, effects)
    assert dict(effects.kill) == {"a": ["c:1:1:0"], "b": ["c:1:1:1"]}
    assert [(k.node_id, k.path) for k in effects.retain] == [
        ("a", "workitems/j/job-1/t1"),
        ("b", "workitems/j/job-1/t1"),
    ]
    # its instances are remembered no longer: the kept directories are the store's (store.kept_dirs)
    assert (state.nodes["b"].used, state.instances, state.subtask_nodes, state.instance_counts) == (0, {}, {}, {})


def break_tentative(state: ControlState) -> None:
    state.nodes["a"].book(7, 1)


def break_two_nodes(state: ControlState) -> None:
    run_task(state, 1, "a")
    state.nodes["b"].book(task_step_id(1, 2), 1)


def break_queued_and_running(state: ControlState) -> None:
    run_task(state, 1, "a")
    state.tasks_queued("j", [(1, 1)])


def break_unbooked_step(state: ControlState) -> None:
    state.steps[task_step_id(1, 1)] = StepRef("task", "j", "a", 1, 1, 1)


def break_wrong_slots(state: ControlState) -> None:
    run_task(state, 1, "a", slots=2)
    state.steps[task_step_id(1, 1)] = StepRef("task", "j", "a", 1, 1, 1)


def break_waiting_off_node(state: ControlState) -> None:
    run_task(state, 1, "b")
    state.wait_for_preparation("j", "a", 1)


def break_ahead_not_in_flight(state: ControlState) -> None:
    state.nodes["a"].ahead[task_step_id(1, 1)] = ("j", 1, 1)


def break_heap(state: ControlState) -> None:
    state.tasks_queued("j", [(1, 1), (2, 1), (3, 1)])
    state.jobs["j"].queue.heap.reverse()


def break_instance_plan(state: ControlState) -> None:
    state.instance_plans[5] = [state.nodes["a"], state.nodes["b"]]


def break_node_sum(state: ControlState) -> None:
    run_task(state, 1, "a")
    state.nodes["a"].booked["t:2:1"] = 1  # past book(): used no longer the sum


def break_withdrawing(state: ControlState) -> None:
    state.nodes["a"].withdrawing.add("t:1:1")  # asked back, yet never sent ahead


@pytest.mark.parametrize(
    "breaks, says",
    [
        (break_tentative, "tentative booking 7 on a"),
        (break_two_nodes, "task 1 holds a and b"),
        (break_queued_and_running, "task 1 is queued and holds node a"),
        (break_unbooked_step, "t:1:1 runs on a holding None, not 1"),
        (break_wrong_slots, "t:1:1 runs on a holding 2, not 1"),
        (break_waiting_off_node, "task 1 waits for a's preparation off that node"),
        (break_ahead_not_in_flight, "t:1:1 sent ahead to a is not in flight"),
        (break_heap, "queue is not a heap"),
        (break_instance_plan, "instance plans [5] outlived their round"),
        (break_node_sum, "(1, {"),
        (break_withdrawing, "withdrawing {'t:1:1'} not ahead"),
    ],
)
def test_each_invariant_is_checked(breaks: Callable[[ControlState], None], says: str) -> None:
    state = fresh()
    state.check()
    breaks(state)
    with pytest.raises(InvariantBroken, match="control state invariant broken") as broken:
        state.check()
    assert says in str(broken.value)


async def test_a_broken_invariant_fails_the_transaction_before_it_commits(tmp_path) -> None:
    """How every test server runs (KILN_CHECK_STATE): the check is the last step of each write on the loop."""
    from sqlalchemy import text

    from kiln.store.database import Database, sqlite_url

    database = Database(sqlite_url(tmp_path))
    try:
        await database.write(lambda conn: conn.execute(text("CREATE TABLE marks (n INTEGER)")))
        state = fresh()
        database.before_commit = state.check
        await database.write(lambda conn: conn.execute(text("INSERT INTO marks VALUES (1)")))
        break_two_nodes(state)
        with pytest.raises(InvariantBroken):
            await database.write(lambda conn: conn.execute(text("INSERT INTO marks VALUES (2)")))
        marks = await database.read(lambda conn: conn.execute(text("SELECT n FROM marks")).scalars().all())
        assert marks == [1]
    finally:
        database.close()


def test_a_test_server_that_logged_a_broken_invariant_fails_its_stop(tmp_path) -> None:
    from kiln.cli.embedded import EmbeddedServer

    server = EmbeddedServer(tmp_path)
    server.log_path.write_text("INFO fine\n")
    server.raise_if_broken()
    with server.log_path.open("a") as log:
        log.write("CRITICAL kiln.scheduler: control state invariant broken: task 1 holds a and b\n")
    with pytest.raises(AssertionError, match="task 1 holds a and b"):
        server.raise_if_broken()


# -- a task starts on a node, and the job's preparation task there ---------------------------------------------


def active_task(seq: int) -> dict[str, Any]:
    doc = {"id": f"t{seq}", "requiredSlots": 1, "constraints": {"maxTaskRetryCount": 0}}
    return {**task_rules.new_row("j", doc, now=T0, etag="e"), "seq": seq, "previous_state": None, "result": None}


def with_preparation(state: ControlState, *, wait: bool = True, retries: int = 0) -> JobEntry:
    prep = {
        "commandLine": "/bin/true",
        "waitForSuccess": wait,
        "rerunOnNodeRebootAfterSuccess": True,
        "constraints": {"maxTaskRetryCount": retries},
    }
    entry = state.jobs["j"] = JobEntry({**job_row(), "spec": {"jobPreparationTask": prep}})
    state.job_changed(entry)
    return entry


def placed(state: ControlState, entry: JobEntry, seq: int, node_id: str, effects: Effects) -> dict[str, Any]:
    """What placement does for a task it chose `node_id` for: a tentative booking, then the start."""
    task, node = active_task(seq), state.nodes[node_id]
    node.book(seq, 1)
    state.start_task(entry, task, node, "p", T0, effects)
    return task


def test_a_task_without_preparation_runs_at_once(state: ControlState) -> None:
    effects = Effects()
    task = placed(state, state.jobs["j"], 1, "a", effects)
    assert (task["state"], task["node_id"], task["attempt"]) == ("running", "a", 1)
    assert effects.dispatch == [Dispatch("task", "t:1:1", "j", "a", task)] and effects.records == []
    assert state.nodes["a"].booked == {"t:1:1": 1} and effects.node_counters == {("a", "total_tasks_run"): 1}
    state.step_off_node("a", "t:1:1", effects, kill=True)


def test_the_first_task_on_a_node_starts_the_preparation_and_waits_for_it_the_next_only_waits(
    state: ControlState,
) -> None:
    entry, effects = with_preparation(state), Effects()
    placed(state, entry, 1, "a", effects)
    placed(state, entry, 2, "a", effects)
    insert, running = effects.records
    assert insert.before is None and insert.values["prep_state"] == "pending"  # as made, not as memory has it now
    assert running.before is not None and running.before["prep_state"] == "pending"
    assert [d.step_id for d in effects.dispatch] == ["p:j:a:1"]  # one preparation, no task yet
    assert [c.values["state"] for c in effects.task_changes.values()] == ["preparing", "preparing"]
    assert state.waiting == {("j", "a"): [1, 2]} and state.nodes["a"].used == 2
    # it succeeds: both run, in the order they came
    effects = Effects()
    ok = state.preparation_finished(
        state.steps["p:j:a:1"], StepResult("p:j:a:1", 0, 1, 0), [preparing(1, "a"), preparing(2, "a")], NOW, effects
    )
    state.step_ended("p:j:a:1")
    assert ok is True and state.preps[("j", "a")]["prep_state"] == "completed" and state.waiting == {}
    assert [d.step_id for d in effects.dispatch] == ["t:1:1", "t:2:1"]
    assert [r.values["prep_state"] for r in effects.records] == ["completed"]
    for seq in (1, 2):
        state.step_off_node("a", f"t:{seq}:1", effects, kill=True)


def preparing(seq: int, node_id: str) -> dict[str, Any]:
    task = active_task(seq)
    task.update(task_rules.transition(task, TaskState.PREPARING, T0, pool_id="p", node_id=node_id, attempt=1))
    return task


def test_a_failed_preparation_is_retried_then_sends_its_tasks_back_with_the_node_excluded(
    state: ControlState,
) -> None:
    entry, effects = with_preparation(state, retries=1), Effects()
    placed(state, entry, 1, "a", effects)
    effects = Effects()
    assert state.preparation_finished(state.steps["p:j:a:1"], StepResult("p:j:a:1", 0, 1, 3), [], NOW, effects) is None
    state.step_ended("p:j:a:1")
    assert [d.step_id for d in effects.dispatch] == ["p:j:a:2"] and state.waiting == {("j", "a"): [1]}
    effects = Effects()
    ok = state.preparation_finished(
        state.steps["p:j:a:2"], StepResult("p:j:a:2", 0, 1, 3), [preparing(1, "a")], NOW, effects
    )
    state.step_ended("p:j:a:2")
    record = state.preps[("j", "a")]
    assert ok is False and (record["prep_state"], record["prep_exit_code"]) == ("completed", 3)
    assert effects.dispatch == [] and state.nodes["a"].used == 0 and state.jobs["j"].queue.heap == [(1, 1)]
    assert effects.task_changes[1].values["state"] == "active" and not effects.kill  # it never ran
    state.jobs["j"].queue.pop()


def test_a_preparation_result_of_an_earlier_attempt_changes_nothing(state: ControlState) -> None:
    entry, effects = with_preparation(state), Effects()
    placed(state, entry, 1, "a", effects)
    stale = StepRef("prep", "j", "a", 7)
    assert state.preparation_finished(stale, StepResult("p:j:a:7", 0, 1, 0), [], NOW, Effects()) is None
    assert state.preps[("j", "a")]["prep_state"] == "running" and state.waiting == {("j", "a"): [1]}
    state.task_off_node("j", "a", 1, 1, effects)
    state.step_ended("p:j:a:1")


def test_a_lost_node_sends_its_tasks_back_and_its_running_preparation_will_run_again(state: ControlState) -> None:
    entry, effects = with_preparation(state), Effects()
    placed(state, entry, 1, "a", effects)  # waits for the preparation task, which runs
    state.sent_ahead("t:2:1", StepRef("task", "j", "a", 1, 2, 1, ahead=True))
    effects = Effects()
    moved = state.node_lost("a", [preparing(1, "a")], NOW, effects)
    assert [ref.seq for ref in moved] == [2]  # sent ahead: its row never changed
    node = state.nodes["a"]
    assert (node.up, node.used, node.ahead, state.steps, state.waiting) == (False, 0, {}, {}, {})
    change = effects.task_changes[1]
    assert (change.state, change.values["state"], change.values["requeue_count"]) == ("preparing", "active", 1)
    assert sorted(state.jobs["j"].queue.heap) == [(1, 1), (2, 1)] and not effects.kill  # its processes are gone
    assert [r.values["prep_state"] for r in effects.records] == ["pending"]
    assert state.preps[("j", "a")]["prep_state"] == "pending"
    state.jobs["j"].queue.pop()
    state.jobs["j"].queue.pop()


def test_an_ended_job_completes_its_tasks_on_nodes_and_takes_back_those_sent_ahead(state: ControlState) -> None:
    effects = Effects()
    run_task(state, 1, "a")
    state.sent_ahead("t:2:1", StepRef("task", "j", "b", 1, 2, 1, ahead=True))
    state.jobs["j"].queue.push(3, 1)
    failure = task_rules.ended_by("the job was ended.")
    moved = state.job_ended("j", [running_task(1, "a")], failure, NOW, effects)
    assert [ref.seq for ref in moved] == [2] and effects.kill == {"b": ["t:2:1"], "a": ["t:1:1"]}
    change = effects.task_changes[1]
    assert (change.values["state"], change.values["failure_info"]) == ("completed", failure)
    assert (state.steps, state.nodes["a"].used, state.nodes["b"].ahead) == ({}, 0, {})
    assert len(state.jobs["j"].queue) == 0 and effects.check_jobs == {"j"}  # queued tasks stay active, never run


@pytest.mark.parametrize("requeue", [True, False])
def test_a_disabled_job_s_tasks_leave_their_nodes_requeued_or_ended(state: ControlState, requeue: bool) -> None:
    run_task(state, 1, "a")
    effects = Effects()
    state.job_disabled(state.jobs["j"], [running_task(1, "a")], requeue, NOW, effects)
    change = effects.task_changes[1].values
    assert (state.nodes["a"].used, state.steps, effects.kill) == (0, {}, {"a": ["t:1:1"]})
    if requeue:
        assert (change["state"], change["requeue_count"], state.jobs["j"].queue.heap) == ("active", 1, [(1, 1)])
        state.jobs["j"].queue.pop()
    else:
        assert (change["state"], change["failure_info"]["code"]) == ("completed", "TaskEnded")
        assert effects.check_jobs == {"j"} and len(state.jobs["j"].queue) == 0


def test_a_terminated_task_sent_ahead_is_killed_taken_back_and_completes_without_running(state: ControlState) -> None:
    state.sent_ahead("t:1:1", StepRef("task", "j", "b", 1, 1, 1, ahead=True))
    task, effects = active_task(1), Effects()
    taken_back = state.task_stopped(task, False, NOW, effects)
    assert taken_back is not None and taken_back.attempt == 1 and task["attempt"] == 1  # guard as the store has it
    change = effects.task_changes[1]
    assert (change.attempt, change.values["state"], change.values["failure_info"]["code"]) == (
        1,
        "completed",
        "TaskEnded",
    )
    assert effects.kill == {"b": ["t:1:1"]} and state.nodes["b"].ahead == {} and effects.check_jobs == {"j"}


def test_a_deleted_running_task_leaves_its_node_and_changes_no_row(state: ControlState) -> None:
    run_task(state, 1, "a")
    effects = Effects()
    assert state.task_stopped(running_task(1, "a"), True, NOW, effects) is None
    assert (state.nodes["a"].used, effects.kill, effects.task_changes) == (0, {"a": ["t:1:1"]}, {})


def test_a_node_that_comes_up_runs_the_release_of_an_ending_job_whose_preparation_ran_there(
    state: ControlState,
) -> None:
    prep = {"commandLine": "/bin/true", "waitForSuccess": True, "constraints": {"maxTaskRetryCount": 0}}
    spec = {"jobPreparationTask": prep, "jobReleaseTask": {"commandLine": "/bin/true"}}
    state.jobs["j"] = JobEntry({**job_row(), "state": "terminating", "spec": spec})  # in place of the fixture's
    state.job_changed(state.jobs["j"])
    record = {**prep_rules.new_record("j", "p", "a", 0), "prep_state": "completed", "prep_attempt": 1}
    state.record_tracked(record)
    state.nodes["a"].up = False
    effects = Effects()
    state.node_ready("a", NOW, effects)
    assert state.nodes["a"].up and effects.wake
    assert [d.step_id for d in effects.dispatch] == ["r:j:a:1"] and record["release_state"] == "running"
    state.step_ended("r:j:a:1")


def test_a_release_result_completes_its_record_once(state: ControlState) -> None:
    record = {**prep_rules.new_record("j", "p", "a", 0), "release_state": "running", "release_attempt": 1}
    state.record_tracked(record)
    effects = Effects()
    assert state.release_finished(StepRef("release", "j", "a", 2), StepResult("r:j:a:2", 0, 1, 0), NOW, effects) is None
    assert (
        state.release_finished(StepRef("release", "j", "a", 1), StepResult("r:j:a:1", 0, 1, 4), NOW, effects) is record
    )
    assert (record["release_state"], record["release_exit_code"]) == ("completed", 4)
    assert [w.before["release_state"] for w in effects.records if w.before] == ["running"]


@pytest.mark.parametrize("drain", [True, False])
def test_a_restarting_node_takes_back_what_was_sent_ahead_and_a_reboot_resets_a_failed_preparation(
    state: ControlState, drain: bool
) -> None:
    with_preparation(state)
    state.sent_ahead("t:1:1", StepRef("task", "j", "a", 1, 1, 1, ahead=True))
    record = {**prep_rules.new_record("j", "p", "a", 0), "prep_state": "completed", "prep_result": "failure"}
    state.record_tracked(record)
    effects = Effects()
    moved = state.node_restarting("a", reimaged_as=None, drain=drain, now=NOW, effects=effects)
    assert state.nodes["a"].draining and record["prep_state"] == "pending"  # a reboot gives it another chance
    if drain:  # asked back; what the node started in the moment before finishes
        assert moved == [] and effects.withdraw == {"a": ["t:1:1"]} and state.nodes["a"].withdrawing == {"t:1:1"}
        state.step_off_node("a", "t:1:1", effects, kill=False)
    else:
        assert [r.seq for r in moved] == [1] and effects.kill == {"a": ["t:1:1"]}
        assert state.jobs["j"].queue.heap == [(1, 1)]


def test_a_reimaged_node_is_a_new_incarnation_its_records_left_as_they_were(state: ControlState) -> None:
    record = {**prep_rules.new_record("j", "p", "a", 0), "prep_state": "completed", "prep_result": "failure"}
    state.record_tracked(record)
    effects = Effects()
    state.node_restarting("a", reimaged_as=1, drain=False, now=NOW, effects=effects)
    assert state.nodes["a"].incarnation == 1 and record["prep_state"] == "completed" and effects.records == []
