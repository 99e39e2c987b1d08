"""The simulator against traces computed by hand (see each test's docstring)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from kiln.autoscale.evaluate import compile_formula
from kiln.autoscale.simulate import Arrival, Simulation, Totals, load_workload

HALF_MINUTE = timedelta(seconds=30)


def _simulate(formula: str, workload: list[Arrival], **settings) -> tuple[list, Totals, Simulation]:
    simulation = Simulation(compile_formula(formula), workload, interval=HALF_MINUTE, **settings)
    evaluations, totals = simulation.run()
    return evaluations, totals, simulation


def test_pending_tasks_grow_and_idle_shrinks() -> None:
    """t=0: 2 waiting → 2 nodes, both start (end 60); t=30: no change; t=60: done → 0 nodes; t=90: 1 arrives →
    1 node, it runs to 120; t=120: 0 nodes, the end. Node-seconds: 2×60 + 1×30 = 150; nobody waited."""
    formula = "$TargetDedicatedNodes = max(0, $PendingTasks.GetSample(1)); $NodeDeallocationOption = taskcompletion"
    workload = [Arrival(0, 60), Arrival(0, 60), Arrival(90, 30)]
    evaluations, totals, simulation = _simulate(formula, workload)
    assert [(e.at, e.active, e.running, e.nodes) for e in evaluations] == [
        (0, 2, 0, 2),
        (30, 0, 2, 2),
        (60, 0, 0, 0),
        (90, 1, 0, 1),
        (120, 0, 0, 0),
    ]
    assert (
        evaluations[0].run.results
        == "$TargetDedicatedNodes=2;$TargetLowPriorityNodes=0;$NodeDeallocationOption=taskcompletion"
    )
    assert totals == Totals(150 / 3600, 0.0, 2, 3, 0, 0, 120)
    assert [(t.at, t.samples["$PendingTasks"], t.target, t.nodes) for t in simulation.timeline[:3]] == [
        (0, 2, 2, 2),
        (30, 2, 2, 2),
        (60, 0, 0, 0),
    ]


def test_a_slow_node_start_makes_tasks_wait() -> None:
    """t=0: 1 waiting → a node, up at 30; t=30: the task starts (waited 30 s), ends 60; t=60: 0 nodes."""
    formula = "$TargetDedicatedNodes = max($PendingTasks.GetSample(1)) > 0 ? 1 : 0"
    _, totals, _ = _simulate(formula, [Arrival(0, 30)], node_start=HALF_MINUTE)
    assert totals == Totals(60 / 3600, 30 / 3600, 1, 1, 0, 0, 60)


@pytest.mark.parametrize(
    ("option", "completed", "failed", "requeued", "node_seconds", "wait"),
    [
        ("requeue", 2, 0, 1, 210, 60),
        ("terminate", 1, 1, 0, 120, 0),
        ("taskcompletion", 2, 0, 0, 180, 0),
    ],
)
def test_a_shrink_honours_the_deallocation_option(option, completed, failed, requeued, node_seconds, wait) -> None:
    """Two 90 s tasks on 2 nodes; at t=30 the formula wants 1 node. requeue: one task starts again at 90 (after
    waiting 60 s) and ends at 180. terminate: it fails; the other ends at 90 (node-seconds 2×30 + 1×60).
    taskcompletion: both end at 90."""
    formula = (
        '$TargetDedicatedNodes = time() < time("2025-01-01T00:00:30Z") ? 2 :'
        "  (max($PendingTasks.GetSample(1)) > 0 ? 1 : 0);"
        f"$NodeDeallocationOption = {option}"
    )
    _, totals, _ = _simulate(formula, [Arrival(0, 90), Arrival(0, 90)])
    assert (totals.completed, totals.failed, totals.requeued) == (completed, failed, requeued)
    assert (totals.node_hours * 3600, totals.task_wait_hours * 3600, totals.peak_nodes) == (node_seconds, wait, 2)


def test_a_day_of_samples_takes_seconds() -> None:
    workload = [Arrival(minute * 60, 600) for minute in range(0, 24 * 60, 3)]
    formula = """
    $samples = $PendingTasks.GetSamplePercent(TimeInterval_Minute * 15);
    $tasks = $samples < 70 ? max(0, $PendingTasks.GetSample(1)) :
        max($PendingTasks.GetSample(1), avg($PendingTasks.GetSample(TimeInterval_Minute * 15)));
    $targetVMs = $tasks > 0 ? $tasks : max(0, $TargetDedicatedNodes / 2);
    $TargetDedicatedNodes = max(0, min($targetVMs, 20));
    $NodeDeallocationOption = taskcompletion;
    """
    simulation = Simulation(compile_formula(formula), workload, interval=timedelta(minutes=5))
    evaluations, totals = simulation.run()
    assert totals.completed == len(workload) and totals.peak_nodes <= 20
    assert len(simulation.timeline) > 2880 and len(evaluations) > 288


def test_workloads_read_as_json_or_csv() -> None:
    expected = [Arrival(0, 5), Arrival(10, 2.5)]
    assert load_workload('[{"arrival": 10, "duration": 2.5}, {"arrival": 0, "duration": 5}]') == expected
    assert load_workload("arrival,duration\n10,2.5\n0,5\n") == expected
