"""`kiln autoscale simulate --from-job`: a real job on the shared server, replayed through a formula.

The series is checked against the rule the replay documents, counted here task by task at every sample time
from the records the SDK returns: a task is active from when it could run (its creation, or its dependency's
end) until it started, running from its start until its end, succeeded from its end on.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta
from pathlib import Path

from azure.batch import models

from kiln.testing import run_cli, shell, unique, wait_tasks_completed
from kiln.wire.times import parse_duration

PERIOD = timedelta(seconds=0.5)
#: 10 per active task and 1 per running one: the targets show both series.
FORMULA = "$TargetDedicatedNodes = 10 * max($ActiveTasks.GetSample(1)) + max($RunningTasks.GetSample(1))"


def _counts(tasks: list[models.BatchTask], at: datetime) -> tuple[int, int, int]:
    by_id = {task.id: task for task in tasks}
    active = running = succeeded = 0
    for task in tasks:
        info = task.execution_info
        ready = task.creation_time
        if task.depends_on is not None:
            ready = max([ready, *(by_id[dep].execution_info.end_time for dep in task.depends_on.task_ids)])
        ready = min(ready, info.start_time)
        active += ready <= at < info.start_time
        running += info.start_time <= at < info.end_time
        succeeded += info.end_time <= at and info.result == "success"
    return active, running, succeeded


def test_a_recorded_job_replays_into_the_samples_and_targets_it_had(server, client, pool, cleanup, tmp_path) -> None:
    job_id = unique("replay")
    client.create_job(
        models.BatchJobCreateOptions(
            id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool), uses_task_dependencies=True
        )
    )
    cleanup(job=job_id)
    tasks = [
        models.BatchTaskCreateOptions(id="first", command_line=shell("sleep 2")),
        models.BatchTaskCreateOptions(
            id="second", command_line=shell("sleep 1"), depends_on=models.BatchTaskDependencies(task_ids=["first"])
        ),
        models.BatchTaskCreateOptions(id="alone", command_line=shell("sleep 1")),
    ]
    client.create_task_collection(job_id, models.BatchTaskGroup(task_values=tasks))
    recorded = wait_tasks_completed(client, job_id)
    assert all(task.execution_info.result == "success" for task in recorded)

    (tmp_path / "formula.txt").write_text(FORMULA)
    args = ["--from-job", job_id, "--sample-period", "PT0.5S", "--interval", "PT0.5S", "--json"]
    result = run_cli(server, "autoscale", "simulate", str(tmp_path / "formula.txt"), *args)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)

    origin = min(task.creation_time for task in recorded)
    last = max(task.execution_info.end_time for task in recorded)
    expected = []
    for tick in range(math.ceil((last - origin) / PERIOD) + 1):
        active, running, _ = _counts(recorded, origin + tick * PERIOD)
        expected.append((tick * PERIOD, active, running, 10 * active + running))
    replayed = [(parse_duration(e["at"]), e["activeTasks"], e["runningTasks"], e["nodes"]) for e in out["evaluations"]]
    assert replayed == expected and not [e for e in out["evaluations"] if "error" in e]
    assert out["evaluations"][0]["results"].startswith(f"$TargetDedicatedNodes={expected[0][3]};")
    assert out["totals"]["completed"] == 3 and out["totals"]["failed"] == 0
    assert _counts(recorded, last) == (0, 0, 3)

    rerun = run_cli(server, "autoscale", "simulate", str(tmp_path / "formula.txt"), *args, "--rerun")
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["totals"]["completed"] == 3  # run again on the formula's simulated nodes


def test_a_job_that_does_not_exist_is_not_found(server, tmp_path: Path) -> None:
    (tmp_path / "formula.txt").write_text(FORMULA)
    result = run_cli(server, "autoscale", "simulate", str(tmp_path / "formula.txt"), "--from-job", "nothing-here")
    assert result.returncode == 3 and "JobNotFound" in result.stderr
