"""A node's room for tasks sent ahead (scheduler/ahead.py)."""

from __future__ import annotations

from kiln.scheduler.slots import AHEAD_DEPTH, NodeSlots


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
