"""A node's room for tasks sent ahead (scheduler/ahead.py)."""

from __future__ import annotations

import pytest

from kiln.scheduler.slots import AHEAD_DEPTH, JobQueue, NodeSlots


def node_of(capacity: int = 4, **fields) -> NodeSlots:
    return NodeSlots("n", "p", capacity=capacity, root="/r", up=True, **fields)


def test_used_slots_are_the_sum_of_what_is_booked() -> None:
    node = node_of()
    node.book(7, 2)  # a placement round's choice, before the task's row is checked
    node.book("t:8:1", 1)
    assert node.used == 3 and node.free == 1
    node.rebook(7, "t:7:1")  # the task starts: its step holds the slots now
    assert node.booked == {"t:8:1": 1, "t:7:1": 2} and node.used == 3
    node.check()
    assert node.release("t:7:1") == 2 and node.release("t:7:1") == 0  # nothing left to free: nothing changes
    assert node.used == 1
    node.check()


def test_a_holder_books_a_node_once() -> None:
    node = node_of()
    node.book("t:1:1", 1)
    with pytest.raises(ValueError, match="already holds"):
        node.book("t:1:1", 1)
    node.book(2, 1)
    with pytest.raises(ValueError, match="already holds"):
        node.rebook(2, "t:1:1")
    node.check()


def test_the_exclusive_flag_clears_when_the_node_empties() -> None:
    node = node_of()
    node.book("t:1:1", 1)
    node.book("t:2:1", 1)
    node.exclusive = True
    node.release("t:1:1")
    assert node.exclusive
    node.release("t:2:1")
    assert not node.exclusive and node.used == 0
    node.book("t:3:1", 2)
    node.exclusive = True
    node.release_all()
    assert not node.exclusive and node.used == 0 and node.booked == {}
    node.check()


def test_check_finds_broken_bookkeeping() -> None:
    overfull = node_of(capacity=1)
    overfull.book("t:1:1", 2)
    with pytest.raises(AssertionError):
        overfull.check()
    drifted = node_of()
    drifted.book("t:1:1", 1)
    drifted.booked["t:2:1"] = 1  # written behind book()'s back
    with pytest.raises(AssertionError):
        drifted.check()


def test_room_ahead_is_a_few_rounds_of_slots_less_what_was_sent() -> None:
    node = node_of()
    node.book("t:0:1", 4)  # full: sending ahead is for full nodes, and does not change what is running
    assert node.room_ahead == AHEAD_DEPTH * 4
    node.ahead["t:1:1"] = ("j", 1, 3)
    assert node.room_ahead == AHEAD_DEPTH * 4 - 3 and node.free == 0
    node.check()


def test_a_node_that_takes_no_new_tasks_has_no_room_ahead() -> None:
    for change in ({"up": False}, {"draining": True}, {"exclusive": True}):
        node = NodeSlots("n", "p", capacity=4, root="/r", up=True)
        for name, value in change.items():
            setattr(node, name, value)
        assert node.room_ahead == 0, change


def test_a_task_sent_ahead_is_stranded_once_the_free_slots_fit_it() -> None:
    """The node starts tasks sent ahead only in slots its steps free between two reports: a 4-slot task
    behind 1-slot ones waits there until the control plane sees 4 free slots and takes it back."""
    node = node_of()
    for seq in range(4):
        node.book(f"t:{seq}:1", 1)
    node.ahead["t:5:1"] = ("j", 5, 4)
    node.ahead["t:6:1"] = ("j", 6, 1)
    for seq in range(4):
        assert not node.ahead_stranded, node.used  # in order: the 1-slot task waits behind the big one
        node.release(f"t:{seq}:1")
    assert node.ahead_stranded
    node.draining = True
    assert not node.ahead_stranded  # takes no new task: called back by the drain itself


def test_a_node_with_nothing_sent_ahead_strands_nothing() -> None:
    assert not node_of().ahead_stranded


def test_removing_a_queued_task_keeps_the_queue_oldest_first() -> None:
    """Dropping an entry from the middle of a heap's list breaks the heap unless it is rebuilt: tasks then
    started out of order after a task was terminated or deleted."""
    queue = JobQueue()
    for seq in (1, 3, 2, 4):
        queue.push(seq, 1)
    assert queue.heap == [(1, 1), (3, 1), (2, 1), (4, 1)]  # a valid heap, not sorted
    queue.remove(1)  # the oldest, at the heap's root
    queue.remove(9)  # not queued: nothing happens
    assert [queue.pop()[0] for _ in range(len(queue))] == [2, 3, 4]
    queue.push(1, 1)  # may be queued again
    assert queue.pop() == (1, 1) and not queue.queued
