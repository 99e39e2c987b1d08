"""$select and $expand name only what an entity has: anything else is Batch's 400, whichever the entity set."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from azure.batch import models

from kiln.api.client_auth import SharedKeyAuth
from kiln.testing import unique


def _get(server, path: str, version: str = "2025-06-01", **query: str) -> httpx.Response:
    return httpx.get(
        f"{server.endpoint}{path}",
        params={"api-version": version, **query},
        auth=SharedKeyAuth(server.account_name, server.account_key),
    )


@pytest.fixture(scope="module")
def job(client, pool) -> Iterator[str]:
    """A job with one task, t."""
    job_id = unique("query")
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool)))
    client.create_task(job_id, models.BatchTaskCreateOptions(id="t", command_line="/bin/true"))
    yield job_id
    client.begin_delete_job(job_id, polling_interval=0.5).result()


@pytest.mark.parametrize(
    "path",
    [
        "/pools",
        "/jobs",
        "/jobschedules",
        "/pools/{pool}",
        "/pools/{pool}/nodes",
        "/jobs/{job}/tasks",
        "/jobs/{job}/tasks/t",
    ],
)
@pytest.mark.parametrize(("option", "value"), [("$select", "id,bogus"), ("$expand", "bogus")])
def test_an_unknown_name_is_400_invalid_query_parameter_value(server, pool, job, path, option, value):
    response = _get(server, path.format(pool=pool, job=job), **{option: value})
    body = response.json()
    assert (response.status_code, body["code"]) == (400, "InvalidQueryParameterValue")
    assert "'bogus'" in body["message"]["value"]
    assert {v["key"]: v["value"] for v in body["values"]}["QueryParameterName"] == option


def test_known_names_select_case_insensitively(server, pool):
    response = _get(server, f"/pools/{pool}", **{"$select": "ID,State"})
    assert response.status_code == 200
    assert {k for k in response.json() if not k.startswith("odata.")} == {"id", "state"}


def test_statistics_are_expanded_with_batchs_wire_types(server, pool):
    """int64 counts are strings, as Batch sends them; $select still chooses."""
    stats = _get(server, f"/pools/{pool}", **{"$expand": "stats"}).json()["stats"]
    assert isinstance(stats["resourceStats"]["diskReadIOps"], str)
    assert stats["usageStats"]["dedicatedCoreTime"].startswith("P")
    (listed,) = _get(
        server, "/pools", **{"$expand": "stats", "$select": "id,stats", "$filter": f"id eq '{pool}'"}
    ).json()["value"]
    assert set(listed) == {"id", "stats"}


def test_nodes_may_not_be_expanded(server, pool):
    assert _get(server, f"/pools/{pool}/nodes", **{"$expand": "stats"}).status_code == 400


def test_an_older_client_selects_by_its_own_names(server, pool):
    body = _get(server, f"/pools/{pool}", "2020-03-01.11.0", **{"$select": "id,maxTasksPerNode"}).json()
    assert {k for k in body if not k.startswith("odata.")} == {"id", "maxTasksPerNode"}


def test_an_older_clients_filter_is_read_in_its_own_names(server, pool):
    """Its filters pass through its version's renames (none of Batch's filterable properties was renamed, so a
    renamed name is refused as the client wrote it, and the rest filter as ever)."""
    old = "2020-03-01.11.0"
    (found,) = _get(server, "/pools", old, **{"$filter": f"id eq '{pool}' and state eq 'active'"}).json()["value"]
    assert found["maxTasksPerNode"] == 2
    refused = _get(server, "/pools", old, **{"$filter": "maxTasksPerNode eq 2"})
    assert refused.status_code == 400 and "'maxTasksPerNode'" in refused.json()["message"]["value"]
