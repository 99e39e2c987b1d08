"""Batch's time and duration formats."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta

import isodate

#: What the service writes for "no limit" (TimeSpan.MaxValue).
UNLIMITED = "P10675199DT2H48M5.4775807S"
UNLIMITED_SECONDS = 10675199 * 86400 + 2 * 3600 + 48 * 60 + 5.4775807


def now() -> datetime:
    return datetime.now(UTC)


@functools.lru_cache(maxsize=1024)  # a response often repeats a moment (a collection's lastModified)
def format_time(value: datetime | None) -> str | None:
    """RFC 3339 UTC with 7 fractional digits, as the service writes it."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="microseconds")[:26] + "0Z"


def format_http_time(value: datetime) -> str:
    """RFC 1123, for Last-Modified and friends."""
    return value.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")


def parse_duration(text: str) -> timedelta:
    """Any ISO 8601 duration, including the SDK's zero-padded `PT02S` and bare `P`."""
    if text in ("P", "PT"):
        return timedelta(0)
    if text == UNLIMITED:
        return timedelta.max
    value = isodate.parse_duration(text)
    if not isinstance(value, timedelta):  # years/months: Batch has none; approximate
        value = value.totimedelta(start=datetime(2000, 1, 1))
    return value


@functools.lru_cache(maxsize=256)
def duration_seconds(text: str | None) -> float | None:
    """Seconds of a duration; None for absent or unlimited. Cached: every task's constraints are parsed
    when it starts and ends, and most tasks share a few values."""
    if not text or text == UNLIMITED:
        return None
    value = parse_duration(text)
    return None if value == timedelta.max else value.total_seconds()


def format_duration(value: timedelta) -> str:
    """Short form: PT15M, P7D."""
    if value >= timedelta(days=10675199):
        return UNLIMITED
    return isodate.duration_isoformat(value)
