"""listPoolUsageMetrics through the SDK: core hours from the pool's real node lifetimes, kept after they go."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kiln.testing import create_pool_and_wait, wait_for


def _metrics(client, pool_id: str, **window) -> list:
    return list(client.list_pool_usage_metrics(filter=f"poolId eq '{pool_id}'", **window))


def test_a_pools_node_hours_are_counted_while_it_runs_and_after_it_is_deleted(client):
    pool_id = create_pool_and_wait(client, nodes=1)
    (running,) = _metrics(client, pool_id)
    assert running.vm_size == "standard_d2s_v3" and running.total_core_hours > 0
    assert running.end_time - running.start_time == timedelta(minutes=30)
    assert running.start_time <= datetime.now(UTC) < running.end_time
    client.begin_delete_pool(pool_id, polling_interval=0.5).result()
    (kept,) = wait_for(lambda: _metrics(client, pool_id), 30, "the deleted pool's metrics")
    assert kept.total_core_hours >= running.total_core_hours


def test_a_window_before_the_pool_existed_has_no_metrics_for_it(client, pool):
    long_ago = datetime.now(UTC) - timedelta(days=30)
    assert _metrics(client, pool, start_time=long_ago, end_time=long_ago + timedelta(hours=1)) == []
    assert [m.pool_id for m in _metrics(client, pool, start_time=long_ago)] != []


def test_pool_usage_metrics_of_an_empty_pool_are_not_listed(client, cleanup):
    pool_id = create_pool_and_wait(client, nodes=0)
    cleanup(pool=pool_id)
    assert _metrics(client, pool_id) == []
