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
