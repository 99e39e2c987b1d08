"""listPoolUsageMetrics from node lifetimes: core hours per pool in 30-minute intervals (pure)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from kiln.wire.times import format_time

INTERVAL = timedelta(minutes=30)
_CORES = re.compile(r"^(?:standard_|basic_)?[a-z]+?(\d+)")
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

#: (pool id, vmSize, allocated, left or None while the node is in its pool)
Lifetime = tuple[str, str, datetime, datetime | None]


def cores(vm_size: str) -> int:
    """Azure's size names carry the vCPU count after the family letters (standard_d4s_v3: 4); 1 otherwise."""
    found = _CORES.match(vm_size.lower())
    return max(1, int(found.group(1))) if found else 1


def interval_start(moment: datetime) -> datetime:
    return moment - (moment - _EPOCH) % INTERVAL


def window(start: datetime | None, end: datetime | None, now: datetime) -> tuple[datetime, datetime]:
    """The aggregation intervals asked for; without startTime or endtime, the last one there is (which in
    Kiln is the current one: its metrics are kept as nodes run, not hours later)."""
    current = interval_start(now)
    return (interval_start(start) if start else current, interval_start(end) + INTERVAL if end else current + INTERVAL)


def usage_metrics(lifetimes: Iterable[Lifetime], start: datetime, end: datetime, now: datetime) -> list[dict[str, Any]]:
    """One entry per pool and interval of [start, end) in which the pool had nodes, in time then pool order."""
    hours: dict[tuple[datetime, str], float] = {}
    sizes: dict[str, str] = {}
    for pool_id, vm_size, allocated, left in lifetimes:
        sizes[pool_id] = vm_size
        began, ended = max(allocated, start), min(left or now, end)
        slot = interval_start(began)
        while slot < ended:
            overlap = (min(ended, slot + INTERVAL) - max(began, slot)).total_seconds()
            if overlap > 0:
                hours[(slot, pool_id)] = hours.get((slot, pool_id), 0.0) + overlap / 3600 * cores(vm_size)
            slot += INTERVAL
    return [
        {
            "poolId": pool_id,
            "startTime": format_time(slot),
            "endTime": format_time(slot + INTERVAL),
            "vmSize": sizes[pool_id],
            "totalCoreHours": round(total, 6),
        }
        for (slot, pool_id), total in sorted(hours.items())
    ]
