"""kiln.metrics as data: which task transitions feed the dispatch and run time histograms."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kiln import metrics

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _note(kind: str, from_state: str | None, to_state: str, seconds: float) -> dict:
    since = None if from_state is None else T0
    return {
        "kind": kind,
        "from_state": from_state,
        "to_state": to_state,
        "since": since,
        "at": T0 + timedelta(seconds=seconds),
    }


def _counts() -> tuple[float, float, float]:
    def value(name: str, **labels: str) -> float:
        return metrics.REGISTRY.get_sample_value(name, labels) or 0.0

    return (
        value("kiln_task_dispatch_latency_seconds_sum"),
        value("kiln_task_run_seconds_sum"),
        value("kiln_store_transaction_seconds_count", kind="write"),
    )


def test_a_task_leaving_active_is_dispatched_and_leaving_running_ran() -> None:
    before = _counts()
    notes = [
        _note("task", None, "active", 0),  # added: no time before
        _note("task", "active", "running", 2),
        _note("task", "active", "preparing", 3),
        _note("task", "running", "completed", 5),
        _note("task", "running", "active", 7),  # a retry ends an attempt too
        _note("task", "preparing", "running", 11),  # waiting for the prep is neither
        _note("node", "idle", "running", 13),
    ]
    metrics.committed(notes, 0.001, metrics.WRITE)
    after = _counts()
    assert [a - b for a, b in zip(after, before)] == [2 + 3, 5 + 7, 1]
