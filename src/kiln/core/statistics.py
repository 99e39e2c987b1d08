"""Statistics documents (Batch's TaskStatistics, JobStatistics, JobScheduleStatistics, PoolStatistics and the
account's lifetime ones) from the counters the store keeps (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from kiln.core.usage import Lifetime, cores
from kiln.wire.times import format_duration, format_time

Doc = dict[str, Any]
GIB = float(1 << 30)


def node_seconds(
    lifetimes: Iterable[Lifetime], pool_id: str | None, since: datetime, now: datetime
) -> tuple[float, float]:
    """(node seconds, core seconds) the pool's nodes (every pool's: pool_id None) spent in it from `since`."""
    seconds = core_seconds = 0.0
    for owner, vm_size, allocated, left in lifetimes:
        if pool_id is not None and owner != pool_id:
            continue
        spent = max(0.0, ((left or now) - max(allocated, since)).total_seconds())
        seconds += spent
        core_seconds += spent * cores(vm_size)
    return seconds, core_seconds


def _duration(seconds: float) -> str:
    return format_duration(timedelta(seconds=round(seconds, 3)))


def _usage(row: Mapping[str, Any] | None) -> Doc:
    """The measured part; int64 counts are strings on the wire, as Batch sends them."""
    get = (lambda name: 0) if row is None else row.__getitem__
    return {
        "userCPUTime": _duration(get("user_cpu")),
        "kernelCPUTime": _duration(get("kernel_cpu")),
        "wallClockTime": _duration(get("wall_clock")),
        "readIOps": str(int(get("read_ops"))),
        "writeIOps": str(int(get("write_ops"))),
        "readIOGiB": get("read_bytes") / GIB,
        "writeIOGiB": get("write_bytes") / GIB,
    }


def _span(url: str, start: datetime, row: Mapping[str, Any] | None) -> Doc:
    updated = start if row is None else row["last_update_time"]
    return {"url": url, "startTime": format_time(start), "lastUpdateTime": format_time(updated)}


def task(row: Mapping[str, Any] | None, task_row: Mapping[str, Any], url: str) -> Doc:
    """A task's: its attempts' usage, and its wait from creation to the start of its latest run."""
    started, created = task_row.get("start_time"), task_row["creation_time"]
    wait = (started - created).total_seconds() if started is not None else 0.0
    return {**_span(url, created, row), **_usage(row), "waitTime": _duration(max(0.0, wait))}


def owner(row: Mapping[str, Any] | None, start: datetime, url: str) -> Doc:
    """A job's or job schedule's, or the account's job lifetime statistics: sums over their tasks."""
    get = (lambda name: 0) if row is None else row.__getitem__
    return {
        **_span(url, start, row),
        **_usage(row),
        "numSucceededTasks": str(get("succeeded")),
        "numFailedTasks": str(get("failed")),
        "numTaskRetries": str(get("retries")),
        "waitTime": _duration(get("wait")),
    }


def pool(
    row: Mapping[str, Any] | None, start: datetime, now: datetime, node_time: tuple[float, float], url: str
) -> Doc:
    """A pool's (or every pool's: the account's pool lifetime statistics). Its nodes' core time; the CPU its
    tasks used over its nodes' time, their disk I/O and their largest resident size. Kiln measures no
    network traffic and no disk or memory use between tasks: those read 0 (docs/compatibility.md)."""
    node_seconds, core_seconds = node_time
    get = (lambda name: 0) if row is None else row.__getitem__
    cpu = get("user_cpu") + get("kernel_cpu")
    span = {"startTime": format_time(start), "lastUpdateTime": format_time(now)}
    return {
        "url": url,
        **span,
        "usageStats": {**span, "dedicatedCoreTime": _duration(core_seconds)},
        "resourceStats": {
            **span,
            "avgCPUPercentage": 100.0 * cpu / node_seconds if node_seconds else 0.0,
            "avgMemoryGiB": 0.0,
            "peakMemoryGiB": get("peak_rss") / GIB,
            "avgDiskGiB": 0.0,
            "peakDiskGiB": 0.0,
            "diskReadIOps": str(int(get("read_ops"))),
            "diskWriteIOps": str(int(get("write_ops"))),
            "diskReadGiB": get("read_bytes") / GIB,
            "diskWriteGiB": get("write_bytes") / GIB,
            "networkReadGiB": 0.0,
            "networkWriteGiB": 0.0,
        },
    }
