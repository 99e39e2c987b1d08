"""A small chaos run (bench/chaos.py is the full one): tasks run while the server is SIGKILLed and restarted
and a node worker is SIGKILLed; no task is lost, none runs twice at once, every run is counted, and the store
is intact. Tasks are sent ahead (none has maxParallelTasks): one a node starts just before the server or its
worker dies, its start notice never sent, is counted from the store's record of what was sent ahead and the
run's stdout.txt (scheduler/ahead.py, _count_unseen_runs)."""

from __future__ import annotations

from pathlib import Path

from kiln.testing_chaos import Plan, run


def test_kills_lose_nothing_and_every_run_is_counted(open_tmp: Path, marks_dir: Path) -> None:
    plan = Plan(tasks=40, nodes=2, slots=2, server_kills=1, worker_kills=1)
    outcome = run(plan, open_tmp / "kiln", marks_dir)
    assert (outcome.lost, outcome.run_twice_at_once, outcome.runs_not_counted, outcome.integrity) == ([], [], [], "ok")
    assert sorted(outcome.kills) == ["server", "worker"]
