"""kiln.metrics as data: which task transitions feed the dispatch and run time histograms."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

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
    # the registry is the process's: sums other tests left make the differences inexact in the last bit
    assert [a - b for a, b in zip(after, before)] == pytest.approx([2 + 3, 5 + 7, 1])


def test_timings_count_a_value_on_a_bound_in_that_bound_s_bucket() -> None:
    collector = metrics.TimingsCollector("t_seconds", "test")
    timings = collector.add((0.1, 1.0))
    for seconds in (0.05, 0.1, 0.5, 1.0, 7.0):
        timings.observe(seconds)
    [family] = collector.collect()
    samples = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert samples[("t_seconds_bucket", "0.1")] == 2
    assert samples[("t_seconds_bucket", "1.0")] == 4
    assert samples[("t_seconds_bucket", "+Inf")] == samples[("t_seconds_count", None)] == 5
    assert samples[("t_seconds_sum", None)] == 8.65
