"""Statistics documents from counter rows, as data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kiln.core import statistics

T = datetime(2026, 1, 1, tzinfo=UTC)
ROW = {
    "user_cpu": 1.5,
    "kernel_cpu": 0.25,
    "wall_clock": 90.0,
    "read_ops": 10,
    "write_ops": 20,
    "read_bytes": 1 << 30,
    "write_bytes": 1 << 29,
    "wait": 3.0,
    "succeeded": 4,
    "failed": 1,
    "retries": 2,
    "peak_rss": 1 << 30,
    "last_update_time": T + timedelta(minutes=5),
}


def test_node_seconds_count_each_nodes_time_in_the_pool_since_a_moment_and_its_cores() -> None:
    lifetimes = [
        ("p", "standard_d4s_v3", T - timedelta(hours=1), T + timedelta(seconds=10)),  # counted from T
        ("p", "standard_d2s_v3", T, None),  # still in the pool
        ("q", "standard_d2s_v3", T, None),
    ]
    now = T + timedelta(seconds=20)
    assert statistics.node_seconds(lifetimes, "p", T, now) == (30.0, 80.0)
    assert statistics.node_seconds(lifetimes, None, T, now) == (50.0, 120.0)


def test_a_tasks_wait_is_its_creation_to_its_latest_start_and_counts_are_strings() -> None:
    doc = statistics.task(ROW, {"creation_time": T, "start_time": T + timedelta(seconds=2)}, "u")
    assert doc == {
        "url": "u",
        "startTime": "2026-01-01T00:00:00.0000000Z",
        "lastUpdateTime": "2026-01-01T00:05:00.0000000Z",
        "userCPUTime": "PT1.5S",
        "kernelCPUTime": "PT0.25S",
        "wallClockTime": "PT1M30S",
        "readIOps": "10",
        "writeIOps": "20",
        "readIOGiB": 1.0,
        "writeIOGiB": 0.5,
        "waitTime": "PT2S",
    }


def test_a_task_that_has_not_run_has_zeros_since_its_creation() -> None:
    doc = statistics.task(None, {"creation_time": T, "start_time": None}, "u")
    assert (doc["lastUpdateTime"], doc["userCPUTime"], doc["readIOps"], doc["waitTime"]) == (
        doc["startTime"],
        "P0D",
        "0",
        "P0D",
    )


def test_an_owner_counts_its_tasks_outcomes() -> None:
    doc = statistics.owner(ROW, T, "u")
    assert (doc["numSucceededTasks"], doc["numFailedTasks"], doc["numTaskRetries"], doc["waitTime"]) == (
        "4",
        "1",
        "2",
        "PT3S",
    )


def test_a_pools_cpu_percentage_is_its_tasks_cpu_over_its_nodes_time() -> None:
    doc = statistics.pool(ROW, T, T + timedelta(hours=1), (17.5, 35.0), "u")
    assert doc["usageStats"]["dedicatedCoreTime"] == "PT35S"
    resources = doc["resourceStats"]
    assert resources["avgCPUPercentage"] == 10.0
    assert (resources["diskReadIOps"], resources["diskWriteGiB"], resources["peakMemoryGiB"]) == ("10", 0.5, 1.0)
    assert statistics.pool(None, T, T, (0.0, 0.0), "u")["resourceStats"]["avgCPUPercentage"] == 0.0
