"""scheduler.priority: which queued tasks start where (batch-semantics §6.5), as data: jobs and nodes in,
bookings [(job, task seq, node)] out."""

from __future__ import annotations

import functools
from itertools import count

import pytest

from kiln.scheduler.line import JobLine, line_key
from kiln.scheduler.priority import JobTurn, ManagerRule, job_order, parallel_budget, place_job, plan
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
    """One placement round: the turns' jobs in a line, as the scheduler keeps it, keyed on the turns."""
    by_job = {t.job: t for t in turns}

    def current(job: str):
        t = by_job[job]
        return line_key(t.priority, t.created, t.served, order) if len(t.queue) else None

    def refilled(job: str) -> None:  # as ControlState.job_wants_slots: a queue that fills lists its job
        if (key := current(job)) is not None:
            line.want(job, key)

    line: JobLine[str] = JobLine()
    for t in turns:
        t.queue.on_refill = functools.partial(refilled, t.job)
        refilled(t.job)
    placed = plan(line, current, by_job.__getitem__, pool, fill, order, tickets or count(1))
    line.check()
    assert set(line.listed) == {t.job for t in turns if len(t.queue)}, "a job that wants slots left the line"
    return [(t.job, seq, node.node_id) for t, seq, _, node in placed]


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


def test_a_job_whose_only_task_fits_nowhere_rests_for_the_round():
    """Its task goes back on its queue, which lists the job again: the round does not serve it again."""
    job = turn("j", [(1, 3)])
    assert booked([job], nodes(("a", 2, 0))) == [] and list(job.queue.heap) == [(1, 3)]


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


# ---------------------------------------------------------------------------------------------- the round's reach
def test_a_round_looks_only_at_the_jobs_the_free_slots_reach():
    """1,000 jobs in line and 2 free slots: two turns are made, not 1,000."""
    made_turns = []
    jobs = {f"j{i:04d}": turn(f"j{i:04d}", [(i, 1)], created=i) for i in range(1000)}

    def turn_of(job: str) -> JobTurn:
        made_turns.append(job)
        return jobs[job]

    def current(job: str):
        t = jobs[job]
        return line_key(t.priority, t.created, t.served, "none") if len(t.queue) else None

    line: JobLine[str] = JobLine()
    for job in jobs:
        line.want(job, line_key(0, jobs[job].created, 0, "none"))
    placed = plan(line, current, turn_of, nodes(("a", 2, 0)), "spread", "none", count(1))
    assert [t.job for t, _, _, _ in placed] == ["j0000", "j0001"] and made_turns == ["j0000", "j0001"]
    assert len(line) == 998  # the two served ran dry and left; the rest wait in their order


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
