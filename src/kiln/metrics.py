"""Prometheus metrics (GET /metrics, docs/metrics.md). What the hot path pays is an observation per task
transition and per store transaction, taken from the story's notes once the transaction has committed;
counts by state are read from the store when scraped."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator, Mapping
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from kiln import story

#: One registry for the process's server (not prometheus_client's global one, which holds the process
#: collectors of whatever imports it).
REGISTRY = CollectorRegistry()

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class Timings:
    """A histogram's buckets in plain lists, observed from one thread at a time. An observation is a bisect
    and two additions: prometheus_client's Histogram takes a lock and walks every bucket, several times
    that, once per task on the scheduler's path."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  #: per bucket (not cumulative); the last is above every bound
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1  # a bucket's bound is inclusive (le)
        self.total += seconds


class TimingsCollector(Collector):
    """Exposes Timings, one series per label values, as a Prometheus histogram."""

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...] = ()) -> None:
        self.name, self.documentation, self.labels = name, documentation, labels
        self.series: dict[tuple[str, ...], Timings] = {}

    def add(self, bounds: tuple[float, ...], *values: str) -> Timings:
        timings = self.series[values] = Timings(bounds)
        return timings

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for values, timings in self.series.items():
            cumulative = list(itertools.accumulate(timings.counts))
            les = [floatToGoString(bound) for bound in timings.bounds] + ["+Inf"]
            family.add_metric(list(values), list(zip(les, cumulative)), timings.total)
        yield family


def _timings(name: str, documentation: str, labels: tuple[str, ...] = ()) -> TimingsCollector:
    collector = TimingsCollector(name, documentation, labels)
    REGISTRY.register(collector)
    return collector


DISPATCH = _timings(
    "kiln_task_dispatch_latency_seconds",
    "Time a task spent active (added, retried or requeued) before it started on a node or began waiting "
    "for its job preparation task there.",
).add(_SECONDS)
RUN = _timings(
    "kiln_task_run_seconds",
    "Time a task spent running, per attempt (until it completed, or went back to active for a retry or a requeue).",
).add(_SECONDS)
_TRANSACTION = _timings(
    "kiln_store_transaction_seconds",
    "Time of a store transaction, from its start to its commit, by kind (write or read).",
    ("kind",),
)
_STORE_SECONDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
WRITE, READ = "write", "read"
#: one series per kind: writes run on the event loop (SQLite) or the store's thread, reads on that thread
_TRANSACTIONS = {kind: _TRANSACTION.add(_STORE_SECONDS, kind) for kind in (WRITE, READ)}
REQUESTS = Counter(
    "kiln_http_requests",
    "HTTP requests answered, by method, route template and status code.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
TASKS = Gauge("kiln_tasks", "Tasks by state (read from the store when scraped).", ["state"], registry=REGISTRY)
NODES = Gauge("kiln_nodes", "Compute nodes by state (read from the store when scraped).", ["state"], registry=REGISTRY)

_LEFT_ACTIVE = frozenset({("active", "running"), ("active", "preparing")})


def committed(notes: list[story.Note], seconds: float, kind: str) -> None:
    """A store transaction committed in `seconds` with these transitions."""
    _TRANSACTIONS[kind].observe(seconds)
    for note in notes:
        if note["kind"] != "task":
            continue
        since = note.get("since")
        if not isinstance(since, datetime):
            continue  # an added task: no state before
        if (note["from_state"], note["to_state"]) in _LEFT_ACTIVE:
            DISPATCH.observe((note["at"] - since).total_seconds())
        elif note["from_state"] == "running":
            RUN.observe((note["at"] - since).total_seconds())


def request_answered(method: str, route: str, status: int) -> None:
    REQUESTS.labels(method, route, str(status)).inc()


def scrape(tasks: Mapping[str, int], nodes: Mapping[str, int]) -> bytes:
    """The exposition text, with the counts by state just read (every state, those with none at 0)."""
    for gauge, counts in ((TASKS, tasks), (NODES, nodes)):
        for state, count in counts.items():
            gauge.labels(state).set(count)
    return generate_latest(REGISTRY)
