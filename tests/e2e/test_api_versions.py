"""Each api-version reads its own field names and is answered in its own shape (wire/versions.py)."""

from __future__ import annotations

import httpx

from kiln.api.client_auth import SharedKeyAuth
from kiln.testing import UBUNTU_DOC, shell, unique, wait_for

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
    body = {
        "id": pool_id,
        "vmSize": "standard_d2s_v3",
        "virtualMachineConfiguration": UBUNTU_DOC,
        "targetDedicatedNodes": 0,
        "maxTasksPerNode": 3,
    }
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


def test_a_json_file_is_served_as_written_to_an_older_client(server, pool, cleanup):
    """Only Batch's own bodies are translated: a task's JSON file keeps every key."""
    job_id = unique("v11files")
    assert _batch(server, "POST", "/jobs", NEWEST, {"id": job_id, "poolInfo": {"poolId": pool}}).status_code == 201
    cleanup(job=job_id)
    content = '{"requiredSlots": 1, "taskSlotsPerNode": 2}'
    task = {"id": "t", "commandLine": shell(f"echo '{content}' > $AZ_BATCH_TASK_WORKING_DIR/out.json")}
    assert _batch(server, "POST", f"/jobs/{job_id}/tasks", NEWEST, task).status_code == 201
    wait_for(lambda: _batch(server, "GET", f"/jobs/{job_id}/tasks/t", NEWEST).json()["state"] == "completed")
    response = _batch(server, "GET", f"/jobs/{job_id}/tasks/t/files/wd/out.json", OLDEST)
    assert response.text == content + "\n"
