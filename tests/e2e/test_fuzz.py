"""Hostile input never makes Kiln fail (issue 20, "make it stay fixed"): bodies built from the wire models' own
JSON schemas (or, for the operations whose bodies Kiln reads field by field, from the fields Batch documents),
with wrong types, huge numbers, NaN and junk mixed in, sent to every create and update operation and to the pool
and node operations, and random query parameters sent to every list, to single GETs and to DELETE; each answer
comes back in time and is below 500.

Nothing fuzzed runs: jobs and schedules name a pool that does not exist, pools get no nodes. The node operations
aim at the one node of a pool of their own (it reboots, is reimaged, is deallocated: it runs no task)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from azure.batch import BatchClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from kiln.api.client_auth import SharedKeyAuth
from kiln.cli.embedded import EmbeddedServer
from kiln.testing import UBUNTU_DOC, create_pool_and_wait
from kiln.wire import models
from kiln.wire.models import TARGET_NODES_MAX
from kiln.wire.pool_updates import PoolPatch, PoolReplace

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
        "http://127.0.0.1:1/container?sv=2025-01-05&sig=x",  # a URL where nothing listens
        "https://",
        "ftp://example.invalid/x",
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
        return st.text(max_size=20) | WORDS | st.sampled_from(schema.get("examples") or [""])
    if kind == "integer":
        return st.integers(-5, 100) | st.integers(-(2**70), 2**70)
    if kind == "number":
        return st.floats()
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return JUNK


def bodies(model: type[BaseModel] | dict[str, Any]) -> st.SearchStrategy[Any]:
    """From a wire model's JSON schema, or a JSON schema as given."""
    schema = model if isinstance(model, dict) else model.model_json_schema(by_alias=True)
    return from_schema(schema, schema.get("$defs", {}))


def body_of(required: tuple[str, ...] = (), **properties: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema of a body Kiln reads field by field (the fields as Batch documents them)."""
    return {"type": "object", "properties": properties, "required": list(required)}


def one_of(*values: str) -> dict[str, Any]:
    return {"enum": list(values)}


TEXT: dict[str, Any] = {"type": "string"}
#: Autoscale formulas: valid, broken, and ones that compute what no pool can be.
FORMULAS = [
    "$TargetDedicatedNodes = 0;",
    "$TargetDedicatedNodes = min(0, $PendingTasks.GetSample(1));",
    "$TargetDedicatedNodes = max(0, avg($CPUPercent.GetSample(TimeInterval_Minute * 5, 70)));",
    "$TargetDedicatedNodes = 1 / 0;",
    "$TargetDedicatedNodes = 0 * 10 ^ 999;",
    "$TargetDedicatedNodes = -1; $NodeDeallocationOption = taskcompletion;",
    "$TargetLowPriorityNodes = $ActiveTasks.GetSample(-1);",
    "$x = ;",
    "$TargetDedicatedNodes = " + "(" * 500 + "0" + ")" * 500 + ";",
    "$TargetDedicatedNodes = $PendingTasks.GetSample(TimeInterval_Day * 99999999999);",
]
#: A node option's values (reboot, reimage, deallocate, disable scheduling, remove).
NODE_OPTIONS = one_of("requeue", "terminate", "taskcompletion", "retaineddata")
NODE_USER = body_of(name=TEXT, isAdmin={"type": "boolean"}, expiryTime=TEXT, password=TEXT, sshPublicKey=TEXT)


@pytest.fixture(scope="module")
def http(server: EmbeddedServer) -> Iterator[httpx.Client]:
    auth = SharedKeyAuth(server.account_name, server.account_key)
    with httpx.Client(base_url=server.endpoint, auth=auth, timeout=REQUEST_TIMEOUT, params=API) as client:
        yield client


@pytest.fixture(scope="module")
def targets(http: httpx.Client, client: BatchClient) -> Iterator[dict[str, str]]:
    """A job on no pool with one task, a schedule, a pool without nodes, one with autoscale (to 0 nodes) and one
    with a node, for the updates and operations to aim at."""
    names = {"job": f"fuzz-{uuid.uuid4().hex[:8]}", "schedule": f"fuzz-{uuid.uuid4().hex[:8]}"}
    names["pool"], names["scaled"] = names["job"], f"fuzz-scaled-{uuid.uuid4().hex[:8]}"
    pool = {"vmSize": "standard_d2s_v3", "virtualMachineConfiguration": UBUNTU_DOC}
    assert http.post("/pools", json={"id": names["pool"], **pool}).status_code == 201
    scaled = {"id": names["scaled"], "enableAutoScale": True, "autoScaleFormula": FORMULAS[0], **pool}
    assert http.post("/pools", json=scaled).status_code == 201
    names["nodes"] = create_pool_and_wait(client, nodes=1, pool_id=f"fuzz-nodes-{uuid.uuid4().hex[:8]}")
    names["node"] = next(iter(client.list_nodes(names["nodes"]))).id
    names["deletes"] = f"fuzz-{uuid.uuid4().hex[:8]}"  # a job no update terminates, for the deletes of tasks
    for job_id in (names["job"], names["deletes"]):
        assert http.post("/jobs", json={"id": job_id, "poolInfo": {"poolId": NO_POOL}}).status_code == 201
    assert http.post(f"/jobs/{names['job']}/tasks", json={"id": "t", "commandLine": "true"}).status_code == 201
    schedule = {"id": names["schedule"], "schedule": {}, "jobSpecification": {"poolInfo": {"poolId": NO_POOL}}}
    assert http.post("/jobschedules", json=schedule).status_code == 201
    yield names
    http.delete(f"/jobschedules/{names['schedule']}")
    for job_id in (names["job"], names["deletes"]):
        http.delete(f"/jobs/{job_id}")
    for pool_id in (names["pool"], names["scaled"], names["nodes"]):
        http.delete(f"/pools/{pool_id}")


#: The one 5xx Batch answers by design to a request (docs/compatibility.md): a second enableautoscale within 30 s.
THROTTLED = (503, "TooManyEnableAutoScaleRequests")


def send(http: httpx.Client, method: str, path: str, body: Any) -> httpx.Response:
    content = json.dumps(body)  # NaN and Infinity too: Python's JSON reader takes them
    response = http.request(method, path, content=content, headers={"Content-Type": "application/json"})
    if response.status_code >= 400:
        assert "code" in response.json(), response.text[:2000]  # Batch's error body
    if response.status_code >= 500:
        assert (response.status_code, response.json()["code"]) == THROTTLED, (
            method,
            path,
            content[:2000],
            response.text[:2000],
        )
    return response


def harmless(body: Any, pool_info: str | None = None, *, fresh_id: bool = True) -> Any:
    """Keep fuzzed objects from running anything: no nodes (but for counts past int32, which must be refused), no
    real pool; a new id so creates do not collide."""
    if not isinstance(body, dict):
        return body
    body = dict(body)
    if fresh_id and "id" not in body:
        body["id"] = f"fuzz-{uuid.uuid4().hex[:8]}"
    for count in ("targetDedicatedNodes", "targetLowPriorityNodes"):
        if count in body and not (type(body[count]) is int and body[count] > TARGET_NODES_MAX):
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
@example(body={"vmSize": "standard_d2s_v3", "virtualMachineConfiguration": UBUNTU_DOC, "targetDedicatedNodes": 2**40})
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
    ("PATCH", "/pools/{pool}", PoolPatch, None),
    ("POST", "/pools/{pool}/updateproperties", PoolReplace, None),
    ("POST", "/pools/{pool}/resize", models.PoolResize, None),
    ("POST", "/jobs/{job}/disable", models.JobDisable, None),
    ("POST", "/jobs/{job}/terminate", models.JobTerminate, None),
    (
        "POST",
        "/pools/{pool}/removenodes",
        body_of(
            ("nodeList",),
            nodeList={"type": "array", "items": {"type": "string", "examples": ["tvmps_none"]}},
            resizeTimeout=TEXT,
            nodeDeallocationOption=NODE_OPTIONS,
        ),
        None,
    ),
    (
        "POST",
        "/pools/{scaled}/enableautoscale",
        body_of(autoScaleFormula={"type": "string", "examples": FORMULAS}, autoScaleEvaluationInterval=TEXT),
        None,
    ),
    (
        "POST",
        "/pools/{scaled}/evaluateautoscale",
        body_of(("autoScaleFormula",), autoScaleFormula={"type": "string", "examples": FORMULAS}),
        None,
    ),
    ("POST", "/pools/{nodes}/nodes/{node}/uploadbatchservicelogs", models.UploadBatchServiceLogs, None),
    ("POST", "/pools/{nodes}/nodes/{node}/users", NODE_USER, None),
    ("PUT", "/pools/{nodes}/nodes/{node}/users/someone", NODE_USER, None),
    ("POST", "/pools/{nodes}/nodes/{node}/disablescheduling", body_of(nodeDisableSchedulingOption=NODE_OPTIONS), None),
    ("POST", "/pools/{nodes}/nodes/{node}/reboot", body_of(nodeRebootOption=NODE_OPTIONS), None),
    ("POST", "/pools/{nodes}/nodes/{node}/reimage", body_of(nodeReimageOption=NODE_OPTIONS), None),
    ("POST", "/pools/{nodes}/nodes/{node}/deallocate", body_of(nodeDeallocateOption=NODE_OPTIONS), None),
]

#: What the fuzzing found (each answered 500 once), tried first on every run.
FOUND: dict[tuple[str, str], list[Any]] = {
    ("PATCH", "/pools/{pool}"): [{"taskSlotsPerNode": None}],  # a null stored in a column that holds none
    # past int32: 2**70 overflowed the store's column (500); 2**40 was taken, and Kiln began to start the nodes
    ("POST", "/pools/{pool}/resize"): [{"targetDedicatedNodes": 2**70}, {"targetLowPriorityNodes": 2**40}],
    ("POST", "/pools/{scaled}/enableautoscale"): [{"autoScaleEvaluationInterval": "0"}],  # not a duration
    ("POST", "/pools/{scaled}/evaluateautoscale"): [  # a timeinterval past TimeSpan's (and timedelta's) range
        {"autoScaleFormula": "$TargetDedicatedNodes = $PendingTasks.GetSample(TimeInterval_Day * 99999999999);"}
    ],
}


@pytest.mark.parametrize(("method", "path", "model", "pool_info"), UPDATES, ids=[f"{m} {p}" for m, p, *_ in UPDATES])
def test_update(
    http: httpx.Client,
    targets: dict[str, str],
    method: str,
    path: str,
    model: type[BaseModel] | dict[str, Any],
    pool_info: str | None,
) -> None:
    @FUZZ
    @given(body=bodies(model))
    def update(body: Any) -> None:
        send(http, method, path.format(**targets), harmless(body, pool_info, fresh_id=False))

    for body in FOUND.get((method, path), []):
        update = example(body=body)(update)
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


SINGLES = [
    "/pools/{pool}",
    "/jobs/{job}",
    "/jobs/{job}/tasks/t",
    "/jobschedules/{schedule}",
    "/pools/{nodes}/nodes/{node}",
]


@pytest.mark.parametrize(("path", "examples"), [(path, 25) for path in LISTS] + [(path, 15) for path in SINGLES])
def test_get_query_parameters(http: httpx.Client, targets: dict[str, str], path: str, examples: int) -> None:
    """Lists and single objects alike."""

    @settings(FUZZ, max_examples=examples)
    @given(params=PARAMS)
    def getting(params: dict[str, str]) -> None:
        response = http.get(path.format(**targets), params={**API, **params})
        assert response.status_code < 500, (path, params, response.text[:2000])

    getting()


@pytest.mark.parametrize("kind", ["job", "task"])
def test_delete_query_parameters(http: httpx.Client, targets: dict[str, str], kind: str) -> None:
    """Each example deletes an object of its own (a job on no pool, or a task of a job on no pool)."""

    @settings(FUZZ, max_examples=15)
    @given(params=PARAMS)
    def deleting(params: dict[str, str]) -> None:
        name = f"fuzz-{uuid.uuid4().hex[:8]}"
        if kind == "job":
            added = http.post("/jobs", json={"id": name, "poolInfo": {"poolId": NO_POOL}})
            path = f"/jobs/{name}"
        else:
            added = http.post(f"/jobs/{targets['deletes']}/tasks", json={"id": name, "commandLine": "true"})
            path = f"/jobs/{targets['deletes']}/tasks/{name}"
        assert added.status_code == 201, added.text
        response = http.delete(path, params={**API, **params})
        assert response.status_code < 500, (path, params, response.text[:2000])
        if response.status_code >= 400:
            http.delete(path)

    deleting()
