"""Pool usage metrics from node lifetimes, as data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kiln.core.usage import cores, usage_metrics, window

T = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
M = timedelta(minutes=1)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ("standard_d2s_v3", 2),
        ("STANDARD_D16ds_v5", 16),
        ("Standard_NC24ads_A100_v4", 24),
        ("standard_a1_v2", 1),
        ("a", 1),
    ],
)
def test_cores_come_from_the_size_name(size, expected):
    assert cores(size) == expected


def test_each_interval_gets_the_core_hours_of_the_nodes_in_it():
    lifetimes = [
        ("p", "standard_d2s_v3", T + 15 * M, T + 45 * M),  # 15 min in each of two intervals, 2 cores
        ("p", "standard_d2s_v3", T, None),  # still there at now
        ("q", "standard_d4s_v3", T - 60 * M, T - 30 * M),  # before the window
    ]
    got = usage_metrics(lifetimes, T, T + 60 * M, now=T + 50 * M)
    assert [(m["poolId"], m["startTime"], m["endTime"], m["totalCoreHours"]) for m in got] == [
        ("p", "2026-12-04T10:00:00.0000000Z", "2026-12-04T10:30:00.0000000Z", 1.5),
        ("p", "2026-12-04T10:30:00.0000000Z", "2026-12-04T11:00:00.0000000Z", round((15 + 20) / 60 * 2, 6)),
    ]
    assert {m["vmSize"] for m in got} == {"standard_d2s_v3"}


def test_without_times_the_window_is_the_current_interval():
    assert window(None, None, T + 7 * M) == (T, T + 30 * M)
    assert window(T - 95 * M, T + 7 * M, T + 40 * M) == (T - 120 * M, T + 30 * M)
