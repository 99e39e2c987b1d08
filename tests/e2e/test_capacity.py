"""A server's capacity, as a cloud's would show it, through the SDK: a resize past `kiln serve --max-nodes` ends
short with Azure's resizeErrors, and `--spot-preemption-rate` takes spot nodes back at random. Each test runs a
server of its own with that setting."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from azure.batch import BatchClient, models

from kiln.cli.embedded import EmbeddedServer
from kiln.testing import make_client, pool_options, shell, task_story, unique, wait_for

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


def test_spot_nodes_are_preempted_at_random_at_the_servers_rate(open_base, marks_dir):
    """At 1800 an hour (a chance of 0.39 a second) a spot node is soon taken back while its task runs: the
    task is requeued, not retried, and the node returns fresh (its start task runs again); a dedicated node
    is never taken. The seed repeats the draws; the test polls for what must happen, not for when."""
    env = {"KILN_SPOT_PREEMPTION_RATE": "1800", "KILN_SPOT_PREEMPTION_SEED": "1"}
    with EmbeddedServer(open_base / "spot", env=env) as running:
        client = make_client(running)
        start = models.BatchStartTask(command_line=shell(f"echo boot >> {marks_dir}/boots-$AZ_BATCH_NODE_ID"))
        spot_pool, dedicated_pool = unique("randomspot"), unique("dedicated")
        client.create_pool(pool_options(spot_pool, target_low_priority_nodes=1, start_task=start))
        client.create_pool(pool_options(dedicated_pool, target_dedicated_nodes=1, start_task=start))
        job_id = unique("randomspot")
        client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=spot_pool)))
        client.create_task(job_id, models.BatchTaskCreateOptions(id="t", command_line="sleep 600"))
        requeued = wait_for(
            lambda: (task := client.get_task(job_id, "t")).execution_info.requeue_count and task,
            180,
            "the task requeued by a random preemption",
        )
        assert requeued.execution_info.retry_count == 0
        (spot,) = client.list_nodes(spot_pool)
        fault = next(r for r in task_story(running, job_id, "t")["transitions"] if r["kind"] == "fault")
        assert (fault["to"], fault["nodeId"], fault["stimulus"]) == ("preempt", spot.id, "timer spot-preemption")
        wait_for(
            lambda: len((marks_dir / f"boots-{spot.id}").read_text().split()) >= 2, 120, "the spot node back fresh"
        )
        dedicated = wait_for(
            lambda: next((n for n in client.list_nodes(dedicated_pool) if n.state == "idle"), None), 120, "dedicated"
        )
        assert (marks_dir / f"boots-{dedicated.id}").read_text().split() == ["boot"]  # never taken back
