"""The formula language's values (batch-semantics-2 §4.2) and how the `results` string prints them.

double is `float` (booleans are 1/0), doubleVec is `Vector`, string is `str`, timestamp is an aware `datetime`,
timeinterval is `TimeInterval` (100 ns ticks, like .NET's TimeSpan, so `TimeInterval_100ns` is exact).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

TICKS_PER_SECOND = 10_000_000


@dataclass(frozen=True, slots=True, order=True)
class TimeInterval:
    ticks: int

    @classmethod
    def of(cls, delta: timedelta) -> TimeInterval:
        return cls((delta.days * 86400 + delta.seconds) * TICKS_PER_SECOND + delta.microseconds * 10)

    def delta(self) -> timedelta:
        return timedelta(microseconds=self.ticks / 10)

    def seconds(self) -> float:
        return self.ticks / TICKS_PER_SECOND


@dataclass(frozen=True, slots=True)
class Vector:
    values: tuple[float, ...]


class DeallocationOption(StrEnum):
    """The bare words `$NodeDeallocationOption` takes."""

    REQUEUE = "requeue"
    TERMINATE = "terminate"
    TASKCOMPLETION = "taskcompletion"
    RETAINEDDATA = "retaineddata"


@dataclass(frozen=True, slots=True)
class Metric:
    """A sampled service variable ($CPUPercent, $PendingTasks, ...): only its methods give values."""

    name: str


Value = float | Vector | str | datetime | TimeInterval | DeallocationOption | Metric

_SECOND = TICKS_PER_SECOND
#: TimeInterval_* constants (a year is 365 days).
INTERVALS = {
    "TimeInterval_Zero": TimeInterval(0),
    "TimeInterval_100ns": TimeInterval(1),
    "TimeInterval_Microsecond": TimeInterval(10),
    "TimeInterval_Millisecond": TimeInterval(10_000),
    "TimeInterval_Second": TimeInterval(_SECOND),
    "TimeInterval_Minute": TimeInterval(60 * _SECOND),
    "TimeInterval_Hour": TimeInterval(3600 * _SECOND),
    "TimeInterval_Day": TimeInterval(86400 * _SECOND),
    "TimeInterval_Week": TimeInterval(7 * 86400 * _SECOND),
    "TimeInterval_Year": TimeInterval(365 * 86400 * _SECOND),
}


def type_name(value: Value) -> str:
    """The type's name as the language's documentation calls it, for error messages."""
    match value:
        case float():
            return "double"
        case Vector():
            return "doubleVec"
        case DeallocationOption():
            return "nodeDeallocationOption"
        case str():
            return "string"
        case datetime():
            return "timestamp"
        case TimeInterval():
            return "timeinterval"
    return "sampled service variable"


# ---------------------------------------------------------------------------------------------- printing
def format_value(value: Value) -> str:
    """As the `results` string shows a variable: doubles shortest, timestamps with milliseconds, vectors bracketed."""
    match value:
        case float():
            return format_double(value)
        case Vector(values):
            return "[" + ",".join(format_double(v) for v in values) + "]"
        case datetime():
            return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
        case TimeInterval():
            return format_interval(value)
        case Metric(name):
            return name
    return str(value)


def format_double(value: float) -> str:
    """.NET's shortest round-trip form: 3, 0.5, 1E+20, NaN, Infinity."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value).replace("e", "E")


def format_interval(value: TimeInterval) -> str:
    """.NET TimeSpan's constant form: [-][d.]hh:mm:ss[.fffffff]."""
    sign = "-" if value.ticks < 0 else ""
    seconds, fraction = divmod(abs(value.ticks), TICKS_PER_SECOND)
    minutes, second = divmod(seconds, 60)
    hours, minute = divmod(minutes, 60)
    days, hour = divmod(hours, 24)
    text = f"{sign}{f'{days}.' if days else ''}{hour:02d}:{minute:02d}:{second:02d}"
    return text + (f".{fraction:07d}" if fraction else "")
