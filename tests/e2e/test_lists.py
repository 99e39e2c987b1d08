"""Jobs, job schedules, pools and a pool's nodes listed through the SDK a page at a time (keyset pages,
store.lists): pages add up to the whole list in order, with a filter the store serves and with one it leaves
to the predicate, and an entity deleted between two pages makes the walk skip nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from azure.batch import models

from kiln.testing import pool_options, unique


def _walk_deleting_the_first(listed, delete) -> list[str]:
    """The ids a paged list yields when the first entity of its first page is deleted before the second page."""
    pages = listed.by_page()
    first = [entity.id for entity in next(pages)]
    delete(first[0])
    return first[1:] + [entity.id for page in pages for entity in page]


def test_jobs_page_by_seek_with_filters_and_a_deletion(client, pool):
    prefix = unique("lj")
    ids = [f"{prefix}-{i}" for i in range(7)]
    for job_id in ids:
        client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool)))
    mine = f"startswith(id,'{prefix}')"
    assert [j.id for j in client.list_jobs(filter=mine, max_results=2)] == ids
    assert [j.id for j in client.list_jobs(filter=f"{mine} and state eq 'active'", max_results=3)] == ids
    # executionInfo/poolId has no column: the predicate decides it, page by page
    with_pool = f"{mine} and executionInfo/poolId eq '{pool}'"
    assert [j.id for j in client.list_jobs(filter=with_pool, max_results=3)] == ids
    assert [j.id for j in client.list_jobs(filter=f"id eq '{ids[3]}'")] == [ids[3]]
    assert list(client.list_jobs(filter=f"{mine} and state eq 'completed'")) == []
    walked = _walk_deleting_the_first(
        client.list_jobs(filter=mine, max_results=3), lambda job_id: client.begin_delete_job(job_id).result()
    )
    assert walked == ids[1:]


def test_job_schedules_page_by_seek_with_a_deletion(client, pool):
    prefix = unique("ls")
    ids = [f"{prefix}-{i}" for i in range(5)]
    later = models.BatchJobScheduleConfiguration(do_not_run_until=datetime.now(UTC) + timedelta(days=1))
    spec = models.BatchJobSpecification(pool_info=models.BatchPoolInfo(pool_id=pool))
    for schedule_id in ids:
        client.create_job_schedule(
            models.BatchJobScheduleCreateOptions(id=schedule_id, schedule=later, job_specification=spec)
        )
    mine = f"startswith(id,'{prefix}')"
    assert [s.id for s in client.list_job_schedules(filter=mine, max_results=2)] == ids
    walked = _walk_deleting_the_first(
        client.list_job_schedules(filter=mine, max_results=2),
        lambda schedule_id: client.begin_delete_job_schedule(schedule_id).result(),
    )
    assert walked == ids[1:]


def test_pools_page_by_seek_with_filters_and_a_deletion(client):
    prefix = unique("lp")
    ids = [f"{prefix}-{i}" for i in range(4)]
    for pool_id in ids:
        client.create_pool(pool_options(pool_id, target_dedicated_nodes=0))
    mine = f"startswith(id,'{prefix}')"
    assert [p.id for p in client.list_pools(filter=mine, max_results=1)] == ids
    # vmSize lives in the pool's spec: the predicate decides it
    assert [p.id for p in client.list_pools(filter=f"{mine} and vmSize eq 'STANDARD_D2S_V3'", max_results=3)] == ids
    delete = lambda pool_id: client.begin_delete_pool(pool_id, polling_interval=0.5).result()  # noqa: E731
    try:
        assert _walk_deleting_the_first(client.list_pools(filter=mine, max_results=2), delete) == ids[1:]
    finally:
        for pool_id in ids[1:]:
            delete(pool_id)


def test_a_pools_nodes_page_by_seek(client, pool):
    everything = [n.id for n in client.list_nodes(pool)]
    assert everything == sorted(everything) and len(everything) == 2
    assert [n.id for n in client.list_nodes(pool, max_results=1)] == everything
    # a node's state is computed from its tasks: the predicate decides it
    states = {n.id: getattr(n.state, "value", n.state) for n in client.list_nodes(pool)}
    for state in set(states.values()):
        listed = [n.id for n in client.list_nodes(pool, filter=f"state eq '{state}'", max_results=1)]
        assert listed == [i for i in everything if states[i] == state]
    assert list(client.list_nodes(pool, filter="allocationTime lt '2000-01-01T00:00:00Z'")) == []
