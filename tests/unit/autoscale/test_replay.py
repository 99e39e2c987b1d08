"""Replaying a recorded job: its tasks' wire records → the task metric samples → the formula's targets, by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kiln.autoscale.evaluate import compile_formula
from kiln.autoscale.replay import Replay, arrivals, recorded_tasks
from kiln.autoscale.simulate import Arrival, Totals

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def _task(task_id: str, created: float, started=None, ended=None, result=None, **fields) -> dict:
    info = {"retryCount": 0, "requeueCount": 0}
    info |= {"startTime": _at(started)} if started is not None else {}
    info |= {"endTime": _at(ended), "result": result} if ended is not None else {}
    return {"id": task_id, "creationTime": _at(created), "executionInfo": info, **fields}


#: a runs 10–70 s; b waits for a, runs 80–100 s and fails; c (3 instances) is created at 20 s and runs 40–95 s;
#: d waits for b, which failed: blocked, never counted; e (created at 5 s) never runs.
JOB = [
    _task("a", 0, 10, 70, "success"),
    _task("b", 0, 80, 100, "failure", dependsOn={"taskIds": ["a"]}),
    _task("c", 20, 40, 95, "success", multiInstanceSettings={"numberOfInstances": 3}),
    _task("d", 50, dependsOn={"taskIds": ["b"]}),
    _task("e", 5),
]
FORMULA = "$TargetDedicatedNodes = max($PendingTasks.GetSample(TimeInterval_Minute)); $before = $CurrentDedicatedNodes"


def test_a_job_replayed_gives_the_samples_and_targets_computed_by_hand() -> None:
    """Samples every 30 s up to the first at or after the last time (100 s): 0, 30, 60, 90, 120.
    t=0: a active. t=30: a running; c (3) and e active. t=60: a and c (3) running; b not ready until a ends at
    70; e active. t=90: a succeeded; b and c (3) running. t=120: c's 3 instances succeeded, b failed; e active.
    Evaluations every minute over the samples of the minute before (max of $PendingTasks): t=0 → 1,
    t=60 → max(5, 5), t=120 → max(5, 1); each sees the previous target as its current nodes."""
    replay = Replay(compile_formula(FORMULA), recorded_tasks(JOB), interval=timedelta(minutes=1))
    evaluations, totals = replay.run()
    metrics = ("$ActiveTasks", "$RunningTasks", "$PendingTasks", "$SucceededTasks", "$FailedTasks")
    assert [(tick.at, *(tick.samples[m] for m in metrics)) for tick in replay.timeline] == [
        (0, 1, 0, 1, 0, 0),
        (30, 4, 1, 5, 0, 0),
        (60, 1, 4, 5, 0, 0),
        (90, 1, 4, 5, 1, 0),
        (120, 1, 0, 1, 4, 1),
    ]
    head = "$TargetDedicatedNodes={};$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue;$before={}"
    assert [(e.at, e.active, e.running, e.nodes, e.run.results) for e in evaluations] == [
        (0, 1, 0, 1, head.format(1, 0)),
        (60, 1, 4, 5, head.format(5, 1)),
        (120, 1, 0, 5, head.format(5, 5)),
    ]
    # targets 1, 1, 5, 5, 5 over five 30 s periods; waits: a 10 s, b 10 s (from a's end), c 20 s
    assert totals == Totals(17 * 30 / 3600, 40 / 3600, 5, 2, 1, 0, 120)


def test_a_range_of_dependencies_is_ready_when_the_last_of_them_ends() -> None:
    job = [
        _task("1", 0, 0, 30, "success"),
        _task("2", 0, 0, 50, "success"),
        _task("10", 0, 0, 90, "success"),
        _task("x", 0, dependsOn={"taskIdRanges": [{"start": 1, "end": 2}]}),
    ]
    assert recorded_tasks(job)[-1].ready == T0 + timedelta(seconds=50)


def test_a_job_rerun_arrives_when_its_tasks_could_run_and_lasts_as_they_ran() -> None:
    """a: ready 0, ran 60 s; c: ready 20, ran 55 s, 3 instances; b: ready at a's end (70), ran 20 s; d and e
    never ran."""
    assert arrivals(recorded_tasks(JOB)) == [Arrival(0, 60), *[Arrival(20, 55)] * 3, Arrival(70, 20)]
