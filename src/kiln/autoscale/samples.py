"""Sample history of one pool's metrics and the methods a formula calls on them (batch-semantics-2 §4.5).

A sample is one value per metric, taken every period (Batch's is 30 s); the history keeps a day of them.
A window `(now - start, now - end]` should hold `(start - end) / period` samples; the share present is its
percent. GetSample and the window list the newest sample first.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

#: How often Batch samples a pool's metrics.
PERIOD = timedelta(seconds=30)
#: How long a pool keeps its samples.
KEEP_FOR = timedelta(days=1)

#: The sampled service variables (read-only; objects with sample methods).
TASK_METRICS = ("$ActiveTasks", "$RunningTasks", "$PendingTasks", "$SucceededTasks", "$FailedTasks")
NODE_METRICS = (
    "$CPUPercent",
    "$WallClockSeconds",
    "$MemoryBytes",
    "$DiskBytes",
    "$DiskReadBytes",
    "$DiskWriteBytes",
    "$DiskReadOps",
    "$DiskWriteOps",
    "$NetworkInBytes",
    "$NetworkOutBytes",
    "$SampleNodeCount",
)
METRICS = TASK_METRICS + NODE_METRICS


class InsufficientSamples(Exception):
    """Fewer samples than the formula asked for: the evaluation stops and the pool keeps its size."""

    def __init__(self, metric: str, wanted: float, received: float) -> None:
        self.metric, self.wanted, self.received = metric, wanted, received
        super().__init__(
            f"Insufficient data from data set: {metric} wanted {_percent(wanted)}%, received {_percent(received)}%"
        )


def _percent(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


@dataclass
class History:
    """One pool's samples, oldest first, per metric."""

    period: timedelta = PERIOD  #: how often samples are taken (tests take them faster)
    series: dict[str, deque[tuple[datetime, float]]] = field(default_factory=dict)

    def record(self, at: datetime, values: Mapping[str, float]) -> None:
        for metric, value in values.items():
            self.series.setdefault(metric, deque(maxlen=int(KEEP_FOR / self.period))).append((at, float(value)))

    def samples(self, metric: str) -> deque[tuple[datetime, float]]:
        return self.series.get(metric) or deque()

    def last(self, metric: str, count: int) -> list[float]:
        """GetSample(n): the last n samples, newest first, however old; too few fails."""
        samples = self.samples(metric)
        if count > len(samples):
            raise InsufficientSamples(metric, 100.0, 100.0 * len(samples) / count if count else 100.0)
        return [value for _, value in reversed(samples)][: max(0, count)]

    def window(self, metric: str, start: datetime, end: datetime) -> tuple[list[float], float]:
        """The samples taken in (start, end], newest first, and the percent of the expected ones they are."""
        values = [value for at, value in reversed(self.samples(metric)) if start < at <= end]
        expected = max(1, int((end - start) / self.period))
        return values, min(100.0, 100.0 * len(values) / expected)

    def count(self, metric: str) -> int:
        return len(self.samples(metric))

    def begin(self, metric: str) -> datetime | None:
        samples = self.samples(metric)
        return samples[0][0] if samples else None
