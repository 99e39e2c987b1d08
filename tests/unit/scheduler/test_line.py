"""scheduler.line: a pool's jobs that want slots, in serving order, kept right lazily; as data."""

from __future__ import annotations

import pytest

from kiln.scheduler.line import JobLine, line_key, same_rank


@pytest.mark.parametrize(
    ("jobs", "order", "served_first"),
    [
        # (job, priority, created, served)
        ([("a", 0, 1, 0), ("b", 0, 2, 0)], "none", ["a", "b"]),  # never served: the older first
        ([("a", 0, 1, 5), ("b", 0, 2, 3)], "none", ["b", "a"]),  # turns: least recently served first
        ([("a", 0, 1, 5), ("b", 0, 2, 3)], "creationtime", ["a", "b"]),  # the older, whatever the turns
        ([("a", 0, 1, 0), ("b", 7, 2, 9)], "none", ["b", "a"]),  # priority beats age and turns
        ([("a", -1, 1, 0), ("b", 7, 2, 9)], "creationtime", ["b", "a"]),
    ],
)
def test_line_order(jobs, order, served_first):
    keys = {job: line_key(priority, created, served, order) for job, priority, created, served in jobs}
    line: JobLine[str] = JobLine()
    for job, key in keys.items():
        line.want(job, key)
    popped = [line.pop(keys.get)[1] for _ in jobs]  # type: ignore[index]
    assert popped == served_first and line.pop(keys.get) is None and len(line) == 0


@pytest.mark.parametrize(
    ("a", "b", "order", "same"),
    [
        ((0, 1, 0), (0, 2, 9), "none", True),  # (priority, created, served): equal priorities take turns
        ((0, 1, 0), (0, 2, 9), "creationtime", False),  # one job at a time
        ((1, 1, 0), (0, 2, 0), "none", False),
    ],
)
def test_same_rank(a, b, order, same):
    assert same_rank(line_key(*a, order), line_key(*b, order)) is same


def test_a_job_that_wants_no_slot_leaves_at_the_pop_that_reaches_it():
    line: JobLine[str] = JobLine()
    keys = {"dry": line_key(0, 1, 0, "none"), "busy": line_key(0, 2, 0, "none")}
    for job, key in keys.items():
        line.want(job, key)
    now = {"busy": keys["busy"]}  # "dry" ran out of queued tasks (or was disabled)
    assert line.peek(now.get) == (keys["busy"], "busy")
    assert list(line.listed) == ["busy"]
    line.check()


def test_a_job_whose_key_moved_is_put_back_in_its_place():
    """A failed transaction undid a job's turn, or its priority was updated: the next pop finds it where it is now."""
    line: JobLine[str] = JobLine()
    line.want("a", line_key(0, 1, 0, "none"))
    line.want("b", line_key(0, 2, 0, "none"))
    now = {"a": line_key(0, 1, 10, "none"), "b": line_key(0, 2, 0, "none")}
    assert line.pop(now.get) == (now["b"], "b")
    assert line.pop(now.get) == (now["a"], "a")


def test_listing_again_leaves_one_live_entry_and_stale_ones_are_dropped():
    line: JobLine[str] = JobLine()
    for served in range(500):  # served over and over, never popped: the heap is compacted
        line.want("a", line_key(0, 1, served, "none"))
    assert len(line) == 1 and len(line.heap) <= 2 * len(line) + 64
    line.check()
    now = {"a": line_key(0, 1, 499, "none")}
    assert line.pop(now.get) == (now["a"], "a") and line.pop(now.get) is None
