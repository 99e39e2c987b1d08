"""Kiln's answers against recordings of the real service (azure-batch-recordings: the Azure SDK for Python's
test recordings, api-version 2023-05-01.17.0): the same properties at the same places, the same formats of
times and durations, the same headers. The recorded facts are written out here; docs/compatibility.md lists
what was compared."""

from __future__ import annotations

import io
import re
import zipfile

import httpx
import pytest

from kiln.api.client_auth import SharedKeyAuth
from kiln.api.selection import SELECTABLE
from kiln.testing import unique, wait_for

VERSION = "2023-05-01.17.0"
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,7})?Z")
UNLIMITED = "P10675199DT2H48M5.4775807S"
CONTENT_TYPE = "application/json; odata=minimalmetadata"
#: Top-level properties of recorded entities (update_pools.json, jobs.json, files.json, job_schedules.json,
#: compute_nodes.json), less those of features Kiln does not have (certificates, cloud service pools, VM
#: images and endpoints), and metadata and targetNodeCommunicationMode, recorded only where the test set them.
RECORDED = {
    "pools": """allocationState allocationStateTransitionTime creationTime currentDedicatedNodes currentLowPriorityNodes
        eTag enableAutoScale enableInterNodeCommunication id lastModified resizeTimeout state
        stateTransitionTime targetDedicatedNodes targetLowPriorityNodes taskSchedulingPolicy taskSlotsPerNode url
        vmSize""",
    "jobs": """allowTaskPreemption constraints creationTime eTag executionInfo id lastModified maxParallelTasks
        onAllTasksComplete onTaskFailure poolInfo priority state stateTransitionTime url usesTaskDependencies""",
    "tasks": """commandLine constraints creationTime eTag executionInfo id lastModified nodeInfo previousState
        previousStateTransitionTime requiredSlots state stateTransitionTime url userIdentity""",
    "jobschedules": """creationTime eTag executionInfo id jobSpecification lastModified schedule state
        stateTransitionTime url""",
    "nodes": """affinityId allocationTime id ipAddress isDedicated lastBootTime runningTaskSlotsCount runningTasksCount
        schedulingState state stateTransitionTime totalTasksRun totalTasksSucceeded url vmSize""",
}
#: Nested objects as recorded (jobs.json, files.json).
TASK_EXECUTION_INFO = {"startTime", "endTime", "exitCode", "result", "retryCount", "requeueCount"}
TASK_NODE_INFO = {"affinityId", "nodeUrl", "poolId", "nodeId", "taskRootDirectory", "taskRootDirectoryUrl"}
PREPARATION = {"id", "commandLine", "constraints", "userIdentity", "waitForSuccess", "rerunOnNodeRebootAfterSuccess"}
RELEASE = {"id", "commandLine", "maxWallClockTime", "retentionTime", "userIdentity"}


def _call(server, method: str, path: str, body: dict | None = None) -> httpx.Response:
    return httpx.request(
        method,
        f"{server.endpoint}{path}",
        params={"api-version": VERSION},
        json=body,
        auth=SharedKeyAuth(server.account_name, server.account_key),
    )


def _entity(server, kind: str, path: str) -> dict:
    """GET an entity: Batch's content type, every recorded property, none Batch does not have."""
    response = _call(server, "GET", path)
    assert response.headers["content-type"] == CONTENT_TYPE
    assert response.headers["etag"] if kind != "nodes" else True
    body = response.json()
    names = set(body) - {"odata.metadata"}
    assert set(RECORDED[kind].split()) <= names, set(RECORDED[kind].split()) - names
    assert {name.lower() for name in names} <= SELECTABLE[kind]
    assert all(TIME.fullmatch(body[name]) for name in names if name.endswith("Time") and isinstance(body[name], str))
    return body


def _read_answer(response: httpx.Response, fragment: str) -> dict:
    """A read's answer as recorded: 200, Batch's content type, DataServiceVersion, no ETag (an account-level
    list or a summary has none), and `odata.metadata` naming the entity set."""
    assert (response.status_code, response.headers["content-type"]) == (200, CONTENT_TYPE)
    assert response.headers["dataserviceversion"] == "3.0" and "etag" not in response.headers
    body = response.json()
    assert body["odata.metadata"].endswith(f"/$metadata#{fragment}")
    return body


def _writes_answer(response: httpx.Response, status: int, etag: bool, service_id: bool) -> None:
    """A write's empty answer: DataServiceVersion always; ETag/Last-Modified and DataServiceId where recorded."""
    assert (response.status_code, response.content) == (status, b"")
    assert response.headers["dataserviceversion"] == "3.0"
    assert ("etag" in response.headers, "last-modified" in response.headers) == (etag, etag)
    assert ("dataserviceid" in response.headers) is service_id


@pytest.fixture
def job(server, pool, cleanup) -> str:
    job_id = unique("fidelity")
    body = {
        "id": job_id,
        "poolInfo": {"poolId": pool},
        "jobPreparationTask": {"commandLine": "/bin/true"},
        "jobReleaseTask": {"commandLine": "/bin/true"},
    }
    _writes_answer(_call(server, "POST", "/jobs", body), 201, etag=True, service_id=True)
    cleanup(job=job_id)
    return job_id


def test_a_pool_as_recorded(server, pool):
    body = _entity(server, "pools", f"/pools/{pool}")
    assert (body["resizeTimeout"], body["taskSchedulingPolicy"]) == ("PT15M", {"nodeFillType": "Spread"})
    _writes_answer(_call(server, "HEAD", f"/pools/{pool}"), 200, etag=True, service_id=False)


def test_a_job_its_preparation_and_release_and_its_writes_as_recorded(server, job):
    body = _entity(server, "jobs", f"/jobs/{job}")
    assert body["constraints"] == {"maxWallClockTime": UNLIMITED, "maxTaskRetryCount": 0}
    assert set(body["jobPreparationTask"]) == PREPARATION and set(body["jobReleaseTask"]) == RELEASE
    assert body["jobPreparationTask"]["constraints"] == {
        "maxWallClockTime": UNLIMITED,
        "retentionTime": "P7D",
        "maxTaskRetryCount": 0,
    }
    assert (body["jobReleaseTask"]["maxWallClockTime"], body["jobReleaseTask"]["retentionTime"]) == ("PT15M", "P7D")
    assert body["jobReleaseTask"]["userIdentity"] == {"autoUser": {"scope": "pool", "elevationLevel": "nonadmin"}}
    _writes_answer(_call(server, "POST", f"/jobs/{job}/disable", {"disableTasks": "requeue"}), 202, True, True)
    _writes_answer(_call(server, "POST", f"/jobs/{job}/enable"), 202, etag=True, service_id=True)
    _writes_answer(_call(server, "POST", f"/jobs/{job}/terminate"), 202, etag=True, service_id=True)
    _writes_answer(_call(server, "DELETE", f"/jobs/{job}"), 202, etag=False, service_id=False)


def test_a_completed_task_and_its_node_as_recorded(server, pool, job):
    _writes_answer(
        _call(server, "POST", f"/jobs/{job}/tasks", {"id": "t", "commandLine": "/bin/true"}), 201, True, True
    )
    wait_for(lambda: _call(server, "GET", f"/jobs/{job}/tasks/t").json()["state"] == "completed", what="task t")
    body = _entity(server, "tasks", f"/jobs/{job}/tasks/t")
    assert TASK_EXECUTION_INFO <= set(body["executionInfo"]) and set(body["nodeInfo"]) == TASK_NODE_INFO
    assert body["constraints"] == {"maxWallClockTime": UNLIMITED, "retentionTime": "P7D", "maxTaskRetryCount": 0}
    _entity(server, "nodes", f"/pools/{pool}/nodes/{body['nodeInfo']['nodeId']}")


def test_a_job_schedule_as_recorded(server, pool, cleanup):
    schedule_id = unique("fidelity")
    spec = {"poolInfo": {"poolId": pool}}
    body = {
        "id": schedule_id,
        "schedule": {"startWindow": "PT1H", "recurrenceInterval": "P1D"},
        "jobSpecification": spec,
    }
    _writes_answer(_call(server, "POST", "/jobschedules", body), 201, etag=True, service_id=True)
    _entity(server, "jobschedules", f"/jobschedules/{schedule_id}")
    _writes_answer(_call(server, "POST", f"/jobschedules/{schedule_id}/terminate"), 202, etag=True, service_id=True)
    _writes_answer(_call(server, "DELETE", f"/jobschedules/{schedule_id}"), 202, etag=False, service_id=False)


def test_an_error_body_as_recorded(server):
    response = _call(server, "GET", "/jobs/no-such-job")
    body = response.json()
    assert (response.status_code, response.headers["content-type"]) == (404, CONTENT_TYPE)
    assert body["odata.metadata"].endswith(
        "/$metadata#Microsoft.Azure.Batch.Protocol.Entities.Container.errors/@Element"
    )
    assert body["message"]["lang"] == "en-US"
    assert re.fullmatch(r"(?s).+\nRequestId:[0-9a-f-]{36}\nTime:" + TIME.pattern, body["message"]["value"])


def test_applications_as_recorded(server):
    """applications.json: an application with one package and no display name, listed and read. The recording has
    no displayName (the application was given none): Kiln answers none either."""
    app_id = unique("fidelity")
    package = io.BytesIO()
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr("run.sh", "echo hello world\n")
    added = httpx.put(
        f"{server.endpoint}/kiln/applications/{app_id}/versions/v1.0",
        content=package.getvalue(),
        auth=SharedKeyAuth(server.account_name, server.account_key),
    )
    assert added.status_code == 201
    listed = _read_answer(_call(server, "GET", "/applications"), "listapplicationsummariesresponses")
    assert [a for a in listed["value"] if a["id"] == app_id] == [{"id": app_id, "versions": ["v1.0"]}]
    read = _read_answer(_call(server, "GET", f"/applications/{app_id}"), "getapplicationsummaryresponse/@Element")
    assert read == {"odata.metadata": read["odata.metadata"], "id": app_id, "versions": ["v1.0"]}


def test_node_extensions_list_as_recorded(server, pool):
    """compute_node_extensions.json: the list's envelope (a Kiln node has no extensions, so its list is empty)."""
    node_id = _call(server, "GET", f"/pools/{pool}/nodes").json()["value"][0]["id"]
    listed = _read_answer(_call(server, "GET", f"/pools/{pool}/nodes/{node_id}/extensions"), "extensions")
    assert listed["value"] == []
