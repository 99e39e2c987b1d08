"""Each api-version reads its own field names and is answered in its own shape (wire/versions.py)."""

from __future__ import annotations

import httpx

from kiln.api.auth import SharedKeyAuth
from kiln.testing import unique

OLDEST, NEWEST = "2020-03-01.11.0", "2025-06-01"


def _batch(server, method: str, path: str, version: str, body: dict | None = None) -> httpx.Response:
    return httpx.request(
        method,
        f"{server.endpoint}{path}",
        params={"api-version": version},
        json=body,
        auth=SharedKeyAuth(server.account_name, server.account_key),
    )


def test_a_pool_made_with_max_tasks_per_node_has_those_slots_in_every_version(server, cleanup):
    pool_id = unique("v11pool")
    body = {"id": pool_id, "vmSize": "standard_d2s_v3", "targetDedicatedNodes": 0, "maxTasksPerNode": 3}
    assert _batch(server, "POST", "/pools", OLDEST, body).status_code == 201
    cleanup(pool=pool_id)
    old = _batch(server, "GET", f"/pools/{pool_id}", OLDEST).json()
    new = _batch(server, "GET", f"/pools/{pool_id}", NEWEST).json()
    assert (old["maxTasksPerNode"], "taskSlotsPerNode" in old) == (3, False)
    assert (new["taskSlotsPerNode"], "maxTasksPerNode" in new) == (3, False)


def test_task_counts_are_the_body_itself_in_2020_03_01(server, pool, cleanup):
    job_id = unique("v11job")
    assert _batch(server, "POST", "/jobs", NEWEST, {"id": job_id, "poolInfo": {"poolId": pool}}).status_code == 201
    cleanup(job=job_id)
    old = _batch(server, "GET", f"/jobs/{job_id}/taskcounts", OLDEST).json()
    new = _batch(server, "GET", f"/jobs/{job_id}/taskcounts", NEWEST).json()
    assert (old["active"], "taskCounts" in old, "taskSlotCounts" in old) == (0, False, False)
    assert new["taskCounts"]["active"] == new["taskSlotCounts"]["active"] == 0
