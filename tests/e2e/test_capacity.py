"""A server's capacity, as a cloud's would show it: a resize past `kiln serve --max-nodes` ends short with
Azure's resizeErrors, through the SDK. These tests run a server of their own with a small limit."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from azure.batch import BatchClient, models

from kiln.cli.embedded import EmbeddedServer
from kiln.testing import make_client, pool_options, unique, wait_for

MAX_NODES = 3


@pytest.fixture(scope="module")
def small_server(open_base) -> Iterator[EmbeddedServer]:
    with EmbeddedServer(open_base / "capacity", env={"KILN_MAX_NODES": str(MAX_NODES)}) as running:
        yield running


@pytest.fixture(scope="module")
def small(small_server) -> BatchClient:
    return make_client(small_server)


def _steady(client: BatchClient, pool_id: str) -> models.BatchPool:
    return wait_for(
        lambda: (pool := client.get_pool(pool_id)).allocation_state == "steady" and pool, 120, f"{pool_id} steady"
    )


def _codes(pool: models.BatchPool) -> list[str]:
    return [error.code for error in pool.resize_errors or ()]


def test_a_resize_past_the_servers_limit_ends_short_with_resize_errors_and_a_new_resize_clears_them(small):
    first = unique("capped")
    small.create_pool(pool_options(first, target_dedicated_nodes=2, target_low_priority_nodes=2))
    pool = _steady(small, first)
    assert (pool.current_dedicated_nodes, pool.current_low_priority_nodes) == (2, 1)
    assert (pool.target_dedicated_nodes, pool.target_low_priority_nodes) == (2, 2)  # as asked
    assert _codes(pool) == ["AccountLowPriorityCoreQuotaReached"]
    assert f"at most {MAX_NODES} nodes" in pool.resize_errors[0].message
    assert len(list(small.list_nodes(first))) == 3

    small.begin_resize_pool(
        first, models.BatchPoolResizeOptions(target_dedicated_nodes=1, target_low_priority_nodes=0), polling_interval=1
    ).result()
    pool = _steady(small, first)
    assert (pool.current_dedicated_nodes, pool.current_low_priority_nodes, pool.resize_errors) == (1, 0, None)

    second = unique("capped")
    small.create_pool(pool_options(second, target_dedicated_nodes=3))
    pool = _steady(small, second)
    assert (pool.current_dedicated_nodes, _codes(pool)) == (2, ["AccountCoreQuotaReached"])
    for pool_id in (first, second):
        small.begin_delete_pool(pool_id, polling_interval=0.5).result()
