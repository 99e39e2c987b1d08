"""Hostile input never makes Kiln fail (issue 20, "make it stay fixed"): bodies built from the wire models' own
JSON schemas, with wrong types, huge numbers, NaN and junk mixed in, sent to every create and update operation,
and random query parameters sent to every list; each answer comes back in time and is below 500.

Nothing fuzzed runs: jobs and schedules name a pool that does not exist, pools get no nodes."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from kiln.api.client_auth import SharedKeyAuth
from kiln.cli.embedded import EmbeddedServer
from kiln.testing import UBUNTU_DOC
from kiln.wire import models

API = {"api-version": "2025-06-01"}
NO_POOL = "fuzz-no-such-pool"
#: Per request: an answer later than this is a hang.
REQUEST_TIMEOUT = 20.0
FUZZ = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)

JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3),
    max_leaves=8,
)
#: Strings that mean something somewhere: times, durations, ids, OData, paths, long ones.
WORDS = st.sampled_from(
    [
        "",
        "PT1M",
        "P10675199DT2H48M5.4775807S",
        "P99999999999D",
        "-PT1S",
        "2026-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "0001-01-01T00:00:00Z",
        "../../etc/passwd",
        "a" * 70,
        "x" * 40_000,
        "pool",
        "task",
        "admin",
        "requeue",
        "\x00",
        "é",
    ]
)


def from_schema(schema: dict[str, Any], defs: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Mostly what the schema allows, sometimes not."""
    return st.one_of(_valid(schema, defs, depth), _valid(schema, defs, depth), _valid(schema, defs, depth), JUNK)


def _valid(schema: dict[str, Any], defs: dict[str, Any], depth: int) -> st.SearchStrategy[Any]:
    if depth > 6:
        return JUNK
    if "$ref" in schema:
        return _valid(defs[schema["$ref"].rsplit("/", 1)[1]], defs, depth)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return st.one_of([_valid(s, defs, depth) for s in schema[key]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"]) | st.text(max_size=12)
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        required = set(schema.get("required", ()))
        fields = {name: from_schema(sub, defs, depth + 1) for name, sub in properties.items()}
        return st.fixed_dictionaries(
            {k: v for k, v in fields.items() if k in required},
            optional={k: v for k, v in fields.items() if k not in required},
        )
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {}), defs, depth + 1), max_size=3)
    if kind == "string":
        return st.text(max_size=20) | WORDS
    if kind == "integer":
        return st.integers(-5, 100) | st.integers(-(2**70), 2**70)
    if kind == "number":
        return st.floats()
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return JUNK


def bodies(model: type[BaseModel]) -> st.SearchStrategy[Any]:
    schema = model.model_json_schema(by_alias=True)
    return from_schema(schema, schema.get("$defs", {}))


@pytest.fixture(scope="module")
def http(server: EmbeddedServer) -> Iterator[httpx.Client]:
    auth = SharedKeyAuth(server.account_name, server.account_key)
    with httpx.Client(base_url=server.endpoint, auth=auth, timeout=REQUEST_TIMEOUT, params=API) as client:
        yield client


@pytest.fixture(scope="module")
def targets(http: httpx.Client) -> Iterator[dict[str, str]]:
    """A job on no pool with one task, a schedule and a pool without nodes, for the updates to aim at."""
    names = {"job": f"fuzz-{uuid.uuid4().hex[:8]}", "schedule": f"fuzz-{uuid.uuid4().hex[:8]}"}
    names["pool"] = names["job"]
    assert (
        http.post(
            "/pools", json={"id": names["pool"], "vmSize": "standard_d2s_v3", "virtualMachineConfiguration": UBUNTU_DOC}
        ).status_code
        == 201
    )
    assert http.post("/jobs", json={"id": names["job"], "poolInfo": {"poolId": NO_POOL}}).status_code == 201
    assert http.post(f"/jobs/{names['job']}/tasks", json={"id": "t", "commandLine": "true"}).status_code == 201
    schedule = {"id": names["schedule"], "schedule": {}, "jobSpecification": {"poolInfo": {"poolId": NO_POOL}}}
    assert http.post("/jobschedules", json=schedule).status_code == 201
    yield names
    http.delete(f"/jobschedules/{names['schedule']}")
    http.delete(f"/jobs/{names['job']}")
    http.delete(f"/pools/{names['pool']}")


def send(http: httpx.Client, method: str, path: str, body: Any) -> httpx.Response:
    content = json.dumps(body)  # NaN and Infinity too: Python's JSON reader takes them
    response = http.request(method, path, content=content, headers={"Content-Type": "application/json"})
    assert response.status_code < 500, (method, path, content[:2000], response.text[:2000])
    if response.status_code >= 400:
        assert "code" in response.json()  # Batch's error body
    return response


def harmless(body: Any, pool_info: str | None = None, *, fresh_id: bool = True) -> Any:
    """Keep fuzzed objects from running anything: no nodes, no real pool; a new id so creates do not collide."""
    if not isinstance(body, dict):
        return body
    body = dict(body)
    if fresh_id and "id" not in body:
        body["id"] = f"fuzz-{uuid.uuid4().hex[:8]}"
    for count in ("targetDedicatedNodes", "targetLowPriorityNodes"):
        if count in body:
            body[count] = 0
    body.pop("enableAutoScale", None)
    if pool_info == "job" and "poolInfo" in body:
        body["poolInfo"] = {"poolId": NO_POOL}
    if pool_info == "schedule" and isinstance(body.get("jobSpecification"), dict):
        body["jobSpecification"] = {**body["jobSpecification"], "poolInfo": {"poolId": NO_POOL}}
    return body


def created(http: httpx.Client, response: httpx.Response, collection: str, body: Any) -> None:
    if response.status_code == 201 and isinstance(body, dict):
        http.delete(f"/{collection}/{body['id']}")


@FUZZ
@given(body=bodies(models.PoolAdd))
def test_pool_add(http: httpx.Client, body: Any) -> None:
    body = harmless(body)
    created(http, send(http, "POST", "/pools", body), "pools", body)


@FUZZ
@given(body=bodies(models.JobAdd))
def test_job_add(http: httpx.Client, body: Any) -> None:
    body = harmless(body, "job")
    if isinstance(body, dict):
        body.setdefault("poolInfo", {"poolId": NO_POOL})
    created(http, send(http, "POST", "/jobs", body), "jobs", body)


@FUZZ
@given(body=bodies(models.JobScheduleAdd))
def test_schedule_add(http: httpx.Client, body: Any) -> None:
    body = harmless(body, "schedule")
    created(http, send(http, "POST", "/jobschedules", body), "jobschedules", body)


@FUZZ
@given(body=bodies(models.TaskAdd))
def test_task_add(http: httpx.Client, targets: dict[str, str], body: Any) -> None:
    send(http, "POST", f"/jobs/{targets['job']}/tasks", harmless(body))


@FUZZ
@given(bodies_=st.lists(bodies(models.TaskAdd), max_size=4))
def test_task_collection(http: httpx.Client, targets: dict[str, str], bodies_: list[Any]) -> None:
    send(http, "POST", f"/jobs/{targets['job']}/addtaskcollection", {"value": [harmless(b) for b in bodies_]})


UPDATES = [
    ("PATCH", "/jobs/{job}", models.JobPatch, "job"),
    ("PUT", "/jobs/{job}", models.JobPatch, "job"),
    ("PUT", "/jobs/{job}/tasks/t", models.TaskUpdate, None),
    ("PATCH", "/jobschedules/{schedule}", models.JobScheduleUpdate, "schedule"),
    ("PUT", "/jobschedules/{schedule}", models.JobScheduleUpdate, "schedule"),
    ("PATCH", "/pools/{pool}", models.StartTask, None),
    ("POST", "/pools/{pool}/resize", models.PoolResize, None),
    ("POST", "/jobs/{job}/disable", models.JobDisable, None),
    ("POST", "/jobs/{job}/terminate", models.JobTerminate, None),
]


@pytest.mark.parametrize(("method", "path", "model", "pool_info"), UPDATES, ids=[f"{m} {p}" for m, p, *_ in UPDATES])
def test_update(
    http: httpx.Client,
    targets: dict[str, str],
    method: str,
    path: str,
    model: type[BaseModel],
    pool_info: str | None,
) -> None:
    @FUZZ
    @given(body=bodies(model))
    def update(body: Any) -> None:
        send(http, method, path.format(**targets), harmless(body, pool_info, fresh_id=False))

    update()


LISTS = ["/pools", "/jobs", "/jobschedules", "/jobs/{job}/tasks", "/pools/{pool}/nodes", "/jobs/{job}/taskcounts"]
ODATA = st.sampled_from(
    [
        "state eq 'active'",
        "id eq 'x' and state ne 'completed'",
        "startswith(id, 'a')",
        "((((((((((",
        "state eq",
        "executionInfo/exitCode eq 1",
        "id,state",
        "stats",
        "x" * 5000,
    ]
)
PARAMS = st.dictionaries(
    st.sampled_from(["$filter", "$select", "$expand", "maxresults", "timeout", "$skiptoken", "api-version", "junk"]),
    st.text(max_size=40) | ODATA | st.integers(-(2**70), 2**70).map(str),
    max_size=4,
)


@pytest.mark.parametrize("path", LISTS)
def test_list_query_parameters(http: httpx.Client, targets: dict[str, str], path: str) -> None:
    @settings(FUZZ, max_examples=25)
    @given(params=PARAMS)
    def listing(params: dict[str, str]) -> None:
        response = http.get(path.format(**targets), params={**API, **params})
        assert response.status_code < 500, (path, params, response.text[:2000])

    listing()
