"""The agent's bookkeeping as data: feed it events, assert the state and what it asks for."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kiln.compute.node.table import StepTable


@pytest.fixture
def table() -> Iterator[StepTable]:
    table = StepTable()
    yield table
    table.check()


def result(step_id: str, code: int = 0) -> dict:
    return {"step_id": step_id, "exit_code": code}


def test_accept_starts_new_steps_once(table: StepTable) -> None:
    assert table.accept([("a", "task"), ("b", "prep"), ("a", "task")]) == ["a", "b"]
    assert table.accept([("a", "task"), ("c", "task")]) == ["c"]
    assert table.running == {"a": "task", "b": "prep", "c": "task"}


def test_finished_results_wait_for_an_ack(table: StepTable) -> None:
    table.accept([("a", "task"), ("b", "task")])
    assert table.finish("b", result("b"))
    assert table.finish("a", result("a", 1))
    assert table.pending() == [result("b"), result("a", 1)]  # finishing order
    table.ack(["b"])
    assert table.pending() == [result("a", 1)]
    assert table.accept([("a", "task")]) == []  # unacknowledged: a re-send is still a repeat
    table.ack(["a", "unknown"])
    assert table.pending() == [] and table.running == {}


def test_a_killed_step_reports_nothing(table: StepTable) -> None:
    table.accept([("a", "task"), ("b", "task")])
    assert table.kill(["a", "nope"]) == ["a"]
    assert table.kill(["a"]) == []  # already being killed
    assert not table.finish("a", result("a", 137))
    assert table.pending() == [] and table.running == {"b": "task"}


def test_kill_drops_a_finished_result(table: StepTable) -> None:
    table.accept([("a", "task")])
    table.finish("a", result("a"))
    assert table.kill(["a"]) == []
    assert table.pending() == []


def test_forget_drops_a_cancelled_step(table: StepTable) -> None:
    table.accept([("a", "task")])
    table.kill(["a"])
    table.forget("a")
    assert table.running == {} and table.killing == set()
    assert not table.finish("a", result("a"))  # unknown by now


def test_a_notice_waits_for_its_own_ack_and_gives_way_to_the_result(table: StepTable) -> None:
    table.accept([("a", "task"), ("b", "task")])
    notice = {"step_id": "b", "running": True}
    table.notice("b", notice)
    assert table.finish("a", result("a"))
    assert table.pending() == [notice, result("a")]
    assert table.finish("b", result("b"))  # ended before the notice was acknowledged: the result says it all
    assert table.pending() == [result("a"), result("b")]
    table.ack(["a"], started=["b"])  # the notice's late ack must not drop b's result
    assert table.pending() == [result("b")]


def test_a_notice_of_a_killed_or_unknown_step_is_dropped(table: StepTable) -> None:
    table.accept([("a", "task")])
    table.notice("a", {"step_id": "a", "running": True})
    table.notice("x", {"step_id": "x", "running": True})  # never accepted
    assert [m["step_id"] for m in table.pending()] == ["a"]
    table.kill(["a"])
    assert table.pending() == []
    table.forget("a")
    assert table.running == {}
