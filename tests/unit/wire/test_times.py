"""Batch's time formats: what the SDK parses back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from kiln.wire.times import format_time


def test_times_are_utc_with_seven_fractional_digits() -> None:
    assert format_time(datetime(2026, 11, 26, 7, 13, 5, 123456, tzinfo=UTC)) == "2026-11-26T07:13:05.1234560Z"
    assert (
        format_time(datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2))))
        == "2026-01-02T01:04:05.0000000Z"
    )
    assert format_time(datetime(5, 1, 1, tzinfo=UTC)) == "0005-01-01T00:00:00.0000000Z"
    assert format_time(None) is None
