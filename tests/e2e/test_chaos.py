"""A small chaos run (bench/chaos.py is the full one): tasks run while the server is SIGKILLed and restarted
and a node worker is SIGKILLed; no task is lost, none runs twice at once, every run is counted, and the store
is intact.

The job sets maxParallelTasks, so none of its tasks is sent ahead: a task sent ahead that starts just before the
server dies is still run again uncounted (its start notice was not stored; the store does not record what was
sent ahead), which bench/chaos.py shows with sending ahead on."""

from __future__ import annotations

from pathlib import Path

from kiln.testing_chaos import Plan, run


def test_kills_lose_nothing_and_every_run_is_counted(open_tmp: Path, marks_dir: Path) -> None:
    plan = Plan(tasks=40, nodes=2, slots=2, server_kills=1, worker_kills=1, max_parallel_tasks=1000)
    outcome = run(plan, open_tmp / "kiln", marks_dir)
    assert (outcome.lost, outcome.run_twice_at_once, outcome.runs_not_counted, outcome.integrity) == ([], [], [], "ok")
    assert sorted(outcome.kills) == ["server", "worker"]
