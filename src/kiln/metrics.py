"""Prometheus metrics (GET /metrics, docs/metrics.md). What the hot path pays is an observation per task
transition and per store transaction, taken from the story's notes once the transaction has committed;
counts by state are read from the store when scraped."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from kiln import story

#: One registry for the process's server (not prometheus_client's global one, which holds the process
#: collectors of whatever imports it).
REGISTRY = CollectorRegistry()

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

DISPATCH = Histogram(
    "kiln_task_dispatch_latency_seconds",
    "Time a task spent active (added, retried or requeued) before it started on a node or began waiting "
    "for its job preparation task there.",
    buckets=_SECONDS,
    registry=REGISTRY,
)
RUN = Histogram(
    "kiln_task_run_seconds",
    "Time a task spent running, per attempt (until it completed, or went back to active for a retry or a requeue).",
    buckets=_SECONDS,
    registry=REGISTRY,
)
TRANSACTION = Histogram(
    "kiln_store_transaction_seconds",
    "Time of a store transaction, from its start to its commit, by kind (write or read).",
    ["kind"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
    registry=REGISTRY,
)
WRITE, READ = "write", "read"
_TRANSACTIONS = {kind: TRANSACTION.labels(kind) for kind in (WRITE, READ)}
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
