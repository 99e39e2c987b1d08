"""A node's room for tasks sent ahead (scheduler/ahead.py)."""

from __future__ import annotations

from kiln.scheduler.slots import AHEAD_DEPTH, JobQueue, NodeSlots


def test_room_ahead_is_a_few_rounds_of_slots_less_what_was_sent() -> None:
    node = NodeSlots("n", "p", capacity=4, root="/r", up=True)
    node.used = 4  # full: sending ahead is for full nodes, and does not change what is running
    assert node.room_ahead == AHEAD_DEPTH * 4
    node.ahead["t:1:1"] = ("j", 1, 3)
    assert node.room_ahead == AHEAD_DEPTH * 4 - 3 and node.free == 0


def test_a_node_that_takes_no_new_tasks_has_no_room_ahead() -> None:
    for change in ({"up": False}, {"draining": True}, {"exclusive": True}):
        node = NodeSlots("n", "p", capacity=4, root="/r", up=True)
        for name, value in change.items():
            setattr(node, name, value)
        assert node.room_ahead == 0, change


def test_a_task_sent_ahead_is_stranded_once_the_free_slots_fit_it() -> None:
    """The node starts tasks sent ahead only in slots its steps free between two reports: a 4-slot task
    behind 1-slot ones waits there until the control plane sees 4 free slots and takes it back."""
    node = NodeSlots("n", "p", capacity=4, root="/r", up=True)
    node.used = 4
    node.ahead["t:3:1"] = ("j", 3, 4)
    node.ahead["t:4:1"] = ("j", 4, 1)
    for used, stranded in ((4, False), (3, False), (1, False), (0, True)):
        node.used = used
        assert node.ahead_stranded is stranded, used  # in order: the 1-slot task waits behind the big one
    node.draining = True
    assert not node.ahead_stranded  # takes no new task: called back by the drain itself


def test_a_node_with_nothing_sent_ahead_strands_nothing() -> None:
    assert not NodeSlots("n", "p", capacity=4, root="/r", up=True).ahead_stranded


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
