"""scheduler.priority: which queued tasks start where (batch-semantics §6.5), as data: jobs and nodes in,
bookings [(job, task seq, node)] out."""

from __future__ import annotations

from itertools import count

import pytest

from kiln.scheduler.priority import JobTurn, ManagerRule, job_order, next_in_line, parallel_budget, place_job, plan
from kiln.scheduler.slots import JobQueue, NodeSlots

#: every node a test made: their bookkeeping is checked after it
made: list[NodeSlots] = []


@pytest.fixture(autouse=True)
def _check_nodes():
    yield
    for node in made:
        node.check()
    made.clear()


def nodes(*spec: tuple[str, int, int]) -> list[NodeSlots]:
    """(node id, capacity, used) -> live nodes, their used slots held by one running step."""
    live = [NodeSlots(node_id, "pool", capacity, "/root", up=True) for node_id, capacity, _ in spec]
    for node, (_, _, used) in zip(live, spec, strict=True):
        if used:
            node.book("t:0:1", used)
    made.extend(live)
    return live


def turn(name: str, tasks: list[tuple[int, int]], priority: int = 0, created: int = 0, **fields) -> JobTurn:
    queue = JobQueue()
    for seq, slots in tasks:
        queue.push(seq, slots)
    return JobTurn(name, queue, priority, created, **fields)


def booked(
    turns: list[JobTurn], pool: list[NodeSlots], fill: str = "spread", order: str = "none", tickets=None
) -> list[tuple[str, int, str]]:
    return [(t.job, seq, node.node_id) for t, seq, _, node in plan(turns, pool, fill, order, tickets)]


# ---------------------------------------------------------------------------------------------- slots, fill
@pytest.mark.parametrize(
    ("fill", "expected"),
    [
        ("spread", [("j", 1, "a"), ("j", 2, "b"), ("j", 3, "a")]),  # most free slots first; ties by node id
        ("pack", [("j", 1, "a"), ("j", 2, "a"), ("j", 3, "b")]),  # fullest node that still fits
    ],
)
def test_fill_type(fill, expected):
    assert booked([turn("j", [(1, 1), (2, 1), (3, 1)])], nodes(("a", 2, 0), ("b", 2, 0)), fill) == expected


def test_pack_prefers_the_fuller_node():
    assert booked([turn("j", [(1, 1)])], nodes(("a", 4, 0), ("b", 4, 3)), "pack") == [("j", 1, "b")]


def test_required_slots_and_a_task_that_fits_nowhere_is_passed_over():
    pool = nodes(("a", 2, 0))
    job = turn("j", [(1, 3), (2, 2)])  # 3 slots never fit a 2-slot node
    assert booked([job], pool) == [("j", 2, "a")]
    assert list(job.queue.heap) == [(1, 3)] and pool[0].used == 2
    assert pool[0].booked == {2: 2}  # tentatively, by task seq: the caller rebooks it to its step once started


# ---------------------------------------------------------------------------------------------- priority, order
def test_higher_priority_job_first_whatever_its_age():
    low = turn("low", [(1, 1), (2, 1)], priority=-5, created=1)
    high = turn("high", [(3, 1), (4, 1)], priority=10, created=2)
    assert booked([low, high], nodes(("a", 3, 0))) == [("high", 3, "a"), ("high", 4, "a"), ("low", 1, "a")]


def test_creationtime_serves_the_older_of_equal_priorities_first():
    older, newer = turn("older", [(1, 1), (2, 1)], created=1), turn("newer", [(3, 1), (4, 1)], created=2)
    assert booked([newer, older], nodes(("a", 3, 0)), order="creationtime") == [
        ("older", 1, "a"),
        ("older", 2, "a"),
        ("newer", 3, "a"),
    ]


def test_none_takes_turns_within_a_round():
    first, second = turn("first", [(1, 1), (2, 1)], created=1), turn("second", [(3, 1), (4, 1)], created=2)
    assert booked([first, second], nodes(("a", 3, 0))) == [("first", 1, "a"), ("second", 3, "a"), ("first", 2, "a")]


def test_none_carries_turns_over_to_the_next_round():
    """One slot per round: the job served last round waits for the other."""
    tickets = count(1)
    first, second = turn("first", [(1, 1), (2, 1)], created=1), turn("second", [(3, 1), (4, 1)], created=2)
    rounds = []
    for _ in range(4):
        rounds += booked([first, second], nodes(("a", 1, 0)), tickets=tickets)
    assert [job for job, _, _ in rounds] == ["first", "second", "first", "second"]


def test_priority_beats_turns():
    tickets = count(1)
    high, low = turn("high", [(1, 1), (2, 1)], priority=1), turn("low", [(3, 1)], created=-1)
    assert booked([low, high], nodes(("a", 1, 0)), tickets=tickets) == [("high", 1, "a")]
    assert booked([low, high], nodes(("a", 1, 0)), tickets=tickets) == [("high", 2, "a")]


# ---------------------------------------------------------------------------------------------- next in line
@pytest.mark.parametrize(
    ("contenders", "order", "first"),
    [
        ([], "none", None),
        ([("only", 0, 1)], "none", "only"),
        ([("old", 0, 1), ("new", 0, 2)], "none", None),  # equal priorities take turns: no one job gets every slot
        ([("old", 0, 1), ("new", 0, 2)], "creationtime", "old"),
        ([("new", 0, 2), ("old", 0, 1)], "creationtime", "old"),
        ([("low", 0, 1), ("high", 5, 2)], "none", "high"),  # priority beats age and turns
        ([("low", -3, 1), ("high", 5, 3), ("peer", 5, 2)], "none", None),
        ([("low", -3, 1), ("high", 5, 3), ("peer", 5, 2)], "creationtime", "peer"),
    ],
)
def test_next_in_line_is_the_job_every_freed_slot_goes_to(contenders, order, first):
    assert next_in_line(contenders, order) == first


@pytest.mark.parametrize(
    ("spec", "order"),
    [
        ({}, "none"),
        ({"taskSchedulingPolicy": {"nodeFillType": "pack"}}, "none"),
        ({"taskSchedulingPolicy": {"jobDefaultOrder": "CreationTime"}}, "creationtime"),
    ],
)
def test_job_order(spec, order):
    assert job_order(spec) == order


# ---------------------------------------------------------------------------------------------- maxParallelTasks
@pytest.mark.parametrize(
    ("limit", "on_nodes", "budget"),
    [
        (-1, 0, None),
        (-1, 500, None),
        (1, 0, 1),
        (2, 1, 1),
        (2, 2, 0),
        (3, 5, 0),  # lowered below what runs
    ],
)
def test_parallel_budget(limit, on_nodes, budget):
    assert parallel_budget(limit, on_nodes) == budget


def test_budget_caps_a_job_and_leaves_the_slots_to_others():
    capped = turn("capped", [(1, 1), (2, 1), (3, 1)], priority=5, budget=1)
    other = turn("other", [(4, 1), (5, 1)])
    assert booked([capped, other], nodes(("a", 4, 0))) == [("capped", 1, "a"), ("other", 4, "a"), ("other", 5, "a")]
    assert capped.budget == 0 and len(capped.queue) == 2


def test_zero_budget_places_nothing():
    job = turn("j", [(1, 1)], budget=0)
    assert booked([job], nodes(("a", 4, 0))) == [] and len(job.queue) == 1


# ---------------------------------------------------------------------------------------------- job manager
def test_waiting_manager_holds_back_its_jobs_other_tasks():
    """The manager (2 slots) does not fit; its job's 1-slot tasks would, but wait. Other jobs go on."""
    job = turn("j", [(1, 2), (2, 1)], manager=ManagerRule(1, exclusive=False))
    other = turn("other", [(3, 1)], created=1)
    assert booked([job, other], nodes(("a", 2, 1))) == [("other", 3, "a")]
    assert sorted(job.queue.heap) == [(1, 2), (2, 1)]


def test_exclusive_manager_needs_an_empty_node_and_keeps_it():
    pool = nodes(("busy", 4, 1), ("empty", 2, 0))
    job = turn("j", [(1, 1), (2, 1)], manager=ManagerRule(1, exclusive=True))
    assert booked([job], pool) == [("j", 1, "empty"), ("j", 2, "busy")]
    empty = pool[1]
    assert empty.exclusive and empty.used == 1 and empty.free == 0


def test_exclusive_manager_waits_when_no_node_is_empty():
    job = turn("j", [(1, 1), (2, 1)], manager=ManagerRule(1, exclusive=True))
    assert booked([job], nodes(("a", 4, 1), ("b", 4, 3))) == []


def test_exclusive_flag_clears_when_the_manager_leaves_the_node():
    node = nodes(("a", 2, 0))[0]
    place_job(turn("j", [(1, 1)]).queue, [node], "spread", lambda n: True, manager=ManagerRule(1, True))
    assert node.exclusive and node.free == 0
    node.release(1)
    assert not node.exclusive and node.free == 2


def test_not_allowed_nodes_are_skipped():
    job = turn("j", [(1, 1)], allowed=lambda n: n.node_id != "a")
    assert booked([job], nodes(("a", 4, 0), ("b", 1, 0))) == [("j", 1, "b")]
