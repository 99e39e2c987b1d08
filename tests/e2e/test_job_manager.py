"""The job manager task (batch-semantics §6.5): the job's first task, listed as an ordinary task, started
before the job's other tasks, alone on its node unless runExclusive is false, ending the job (JMComplete)
unless killJobOnCompletion is false, and given a job-scoped AZ_BATCH_AUTHENTICATION_TOKEN."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from azure.batch import models
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

from kiln.testing import create_pool_and_wait, shell, unique, wait_for, wait_job_state, wait_tasks_completed

ADMIN = models.UserIdentity(auto_user=models.AutoUserSpecification(elevation_level="admin"))
#: SDK 15.1 no longer models authenticationTokenSettings (14.x does): sent as raw JSON, as 15.1 users must.
JOB_ACCESS = {"authenticationTokenSettings": {"access": ["job"]}}


# ---------------------------------------------------------------------------------------------- helpers
@pytest.fixture
def own_pool(client, cleanup) -> Callable[..., str]:
    def make(nodes: int, slots: int) -> str:
        pool_id = create_pool_and_wait(client, nodes=nodes, slots=slots)
        cleanup(pool=pool_id)
        return pool_id

    return make


def mark(marks: Path, name: str, then: str = "") -> str:
    """A command that appends "<task>" to marks/<name> (umask 0: any task account may append), then runs `then`."""
    return shell(f"umask 0; echo $AZ_BATCH_TASK_ID >> {marks}/{name}; {then}")


def wait_file(path: Path) -> str:
    """Shell text that waits until `path` exists."""
    return f"while [ ! -e {path} ]; do sleep 0.05; done"


def manager(command: str, **fields) -> models.BatchJobManagerTask:
    return models.BatchJobManagerTask(id=fields.pop("id", "manager"), command_line=command, **fields)


def add_job(client, pool_id: str, cleanup, jm: models.BatchJobManagerTask | None = None, **fields) -> str:
    job_id = fields.pop("id", None) or unique("jm")
    client.create_job(
        models.BatchJobCreateOptions(
            id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id), job_manager_task=jm, **fields
        )
    )
    cleanup(job=job_id)
    return job_id


def probe(client, pool_id: str, cleanup) -> None:
    """Run one short task of a low-priority job to completion: a placement round has passed over every job
    with queued tasks (rounds serve every pool, and other jobs come before this one)."""
    job_id = add_job(client, pool_id, cleanup, priority=-1000)
    client.create_task(job_id, models.BatchTaskCreateOptions(id="probe", command_line="/bin/true"))
    wait_tasks_completed(client, job_id)


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def running(client, job_id: str, n: int) -> list:
    def enough():
        tasks = [t for t in client.list_tasks(job_id) if t.state == "running"]
        return tasks if len(tasks) >= n else None

    return wait_for(enough, 60, f"{n} running tasks in {job_id}")


# ---------------------------------------------------------------------------------------------- the task
def test_job_manager_is_materialized_and_listed_as_the_jobs_first_task(client, pool, cleanup):
    job_id = add_job(
        client, pool, cleanup, manager("/bin/true", kill_job_on_completion=False, display_name="the manager")
    )
    job = client.get_job(job_id)
    jm = job.job_manager_task
    assert jm.id == "manager" and jm.display_name == "the manager" and jm.command_line == "/bin/true"
    assert jm.kill_job_on_completion is False
    assert jm.run_exclusive is True and jm.allow_low_priority_node is True and jm.required_slots == 1
    assert jm.constraints.max_task_retry_count == 0 and jm.constraints.retention_time.days == 7

    tasks = list(client.list_tasks(job_id))
    assert [t.id for t in tasks] == ["manager"]
    with pytest.raises(ResourceExistsError) as caught:
        client.create_task(job_id, models.BatchTaskCreateOptions(id="MANAGER", command_line="/bin/true"))
    assert caught.value.error.code == "TaskExists"

    done = wait_tasks_completed(client, job_id)[0]
    assert done.execution_info.result == "success" and done.node_info.pool_id == pool
    assert done.command_line == "/bin/true" and done.required_slots == 1
    client.create_task(job_id, models.BatchTaskCreateOptions(id="after", command_line="/bin/true"))
    wait_tasks_completed(client, job_id)
    assert client.get_job(job_id).state == "active"  # killJobOnCompletion false: the job goes on
    assert client.get_job_task_counts(job_id).task_counts.succeeded == 2


def test_job_manager_completion_terminates_the_job_with_jm_complete(client, pool, cleanup, marks_dir):
    """killJobOnCompletion (default true): when the manager ends, the job is terminated (JMComplete) and its
    still-running tasks are ended."""
    job_id = add_job(
        client, pool, cleanup, manager(mark(marks_dir, "manager", wait_file(marks_dir / "worker")), run_exclusive=False)
    )
    client.create_task(
        job_id,
        models.BatchTaskCreateOptions(
            id="worker", command_line=mark(marks_dir, "worker", wait_file(marks_dir / "never"))
        ),
    )
    wait_job_state(client, job_id, "completed")
    job = client.get_job(job_id)
    assert job.execution_info.termination_reason == "JMComplete"
    assert job.job_manager_task.kill_job_on_completion is True
    jm, worker = client.get_task(job_id, "manager"), client.get_task(job_id, "worker")
    assert jm.state == "completed" and jm.execution_info.result == "success"
    assert worker.state == "completed" and worker.execution_info.failure_info.code == "TaskEnded"


def test_failed_job_manager_also_ends_the_job(client, pool, cleanup):
    job_id = add_job(client, pool, cleanup, manager(shell("exit 3")))
    wait_job_state(client, job_id, "completed")
    assert client.get_job(job_id).execution_info.termination_reason == "JMComplete"
    jm = client.get_task(job_id, "manager")
    assert jm.execution_info.exit_code == 3 and jm.execution_info.result == "failure"


def test_job_manager_starts_before_the_jobs_other_tasks(client, own_pool, pool, cleanup, marks_dir):
    """1 node x 2 slots, one slot held by another job. The manager needs both slots; the job's own tasks would
    fit the free slot but wait for their manager. Once the slot frees, the manager runs first."""
    pool_id = own_pool(nodes=1, slots=2)
    blocker = add_job(client, pool_id, cleanup)
    client.create_task(
        blocker,
        models.BatchTaskCreateOptions(id="blocker", command_line=mark(marks_dir, "order", wait_file(marks_dir / "go"))),
    )
    running(client, blocker, 1)
    job_id = add_job(
        client,
        pool_id,
        cleanup,
        manager(mark(marks_dir, "order"), required_slots=2, run_exclusive=False, kill_job_on_completion=False),
    )
    client.create_task_collection(
        job_id,
        models.BatchTaskGroup(
            task_values=[
                models.BatchTaskCreateOptions(id=f"t{i}", command_line=mark(marks_dir, "order")) for i in range(2)
            ]
        ),
    )
    probe(client, pool, cleanup)
    assert Counter(t.state for t in client.list_tasks(job_id)) == {"active": 3}
    (marks_dir / "go").touch()
    wait_tasks_completed(client, job_id)
    order = lines(marks_dir / "order")
    assert order[:2] == ["blocker", "manager"] and sorted(order[2:]) == ["t0", "t1"]
    jm = client.get_task(job_id, "manager")
    assert all(jm.execution_info.end_time <= client.get_task(job_id, t).execution_info.start_time for t in ("t0", "t1"))


def test_job_preparation_runs_before_the_job_manager_on_its_node(client, pool, cleanup, marks_dir):
    job_id = add_job(
        client,
        pool,
        cleanup,
        manager(mark(marks_dir, "order"), run_exclusive=False),
        job_preparation_task=models.BatchJobPreparationTask(command_line=mark(marks_dir, "order")),
    )
    wait_job_state(client, job_id, "completed")
    assert lines(marks_dir / "order") == ["jobpreparation", "manager"]
    status = list(client.list_job_preparation_and_release_task_status(job_id))
    assert [s.node_id for s in status] == [client.get_task(job_id, "manager").node_info.node_id]


def test_run_exclusive_job_manager_has_its_node_to_itself(client, own_pool, pool, cleanup, marks_dir):
    """2 nodes x 2 slots: while the manager runs (runExclusive by default), another job's three tasks get only
    the other node's two slots; the third starts once the manager has ended."""
    pool_id = own_pool(nodes=2, slots=2)
    gate = wait_file(marks_dir / "go")
    job_id = add_job(client, pool_id, cleanup, manager(mark(marks_dir, "manager", gate), kill_job_on_completion=False))
    manager_node = running(client, job_id, 1)[0].node_info.node_id
    other = add_job(client, pool_id, cleanup)
    client.create_task_collection(
        other,
        models.BatchTaskGroup(
            task_values=[
                models.BatchTaskCreateOptions(id=f"o{i}", command_line=mark(marks_dir, "other", gate)) for i in range(3)
            ]
        ),
    )
    others = running(client, other, 2)
    probe(client, pool, cleanup)
    assert all(t.node_info.node_id != manager_node for t in others)
    assert Counter(t.state for t in client.list_tasks(other)) == {"running": 2, "active": 1}
    node = client.get_node(pool_id, manager_node)
    assert node.running_tasks_count == 1 and node.running_task_slots_count == 1
    (marks_dir / "go").touch()
    wait_tasks_completed(client, other)
    wait_tasks_completed(client, job_id)


def test_job_manager_without_run_exclusive_shares_its_node(client, own_pool, cleanup, marks_dir):
    pool_id = own_pool(nodes=1, slots=2)
    gate = wait_file(marks_dir / "go")
    job_id = add_job(
        client, pool_id, cleanup, manager(mark(marks_dir, "m", gate), run_exclusive=False, kill_job_on_completion=False)
    )
    client.create_task(job_id, models.BatchTaskCreateOptions(id="beside", command_line=mark(marks_dir, "m", gate)))
    both = running(client, job_id, 2)
    assert len({t.node_info.node_id for t in both}) == 1
    wait_for(lambda: len(lines(marks_dir / "m")) == 2, 60, "both started")
    (marks_dir / "go").touch()
    wait_tasks_completed(client, job_id)


# ---------------------------------------------------------------------------------------------- token
MANAGER_SCRIPT = '''
import json, os, sys, time
from azure.batch import BatchClient, models
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError


class JobToken:
    """The task's AZ_BATCH_AUTHENTICATION_TOKEN as an azure-core token credential."""

    def get_token(self, *scopes, **kwargs):
        return AccessToken(os.environ["AZ_BATCH_AUTHENTICATION_TOKEN"], int(time.time()) + 3600)


plain_http = {"enforce_https": False}  # azure-core sends bearer tokens only over https unless told
client = BatchClient(os.environ["AZ_BATCH_ACCOUNT_URL"], JobToken())
job_id, other_job, marks = os.environ["AZ_BATCH_JOB_ID"], sys.argv[1], sys.argv[2]
results = {"job": client.get_job(job_id, **plain_http).id}
client.create_task(job_id, models.BatchTaskCreateOptions(id="from-manager", command_line="/bin/true"), **plain_http)
while client.get_task(job_id, "from-manager", **plain_http).state != "completed":
    time.sleep(0.05)
results["tasks"] = sorted(t.id for t in client.list_tasks(job_id, **plain_http))
for name, call in (("pools", lambda: list(client.list_pools(**plain_http))),
                   ("other_job", lambda: client.get_job(other_job, **plain_http)),
                   ("add_to_other_job", lambda: client.create_task(
                       other_job, models.BatchTaskCreateOptions(id="intruder", command_line="/bin/true"),
                       **plain_http))):
    try:
        call()
        results[name] = "allowed"
    except HttpResponseError as error:
        results[name] = [error.status_code, error.error.code if error.error else None]
with open(os.path.join(marks, "results.json"), "w") as out:
    json.dump(results, out)
with open(os.path.join(marks, "token"), "w") as out:
    out.write(os.environ["AZ_BATCH_AUTHENTICATION_TOKEN"])
'''


def test_job_manager_uses_its_token_through_the_sdk_on_its_own_job_only(
    client, server, pool, cleanup, marks_dir, open_tmp
):
    """authenticationTokenSettings access [job]: the manager adds and reads tasks of its job with the SDK and
    its bearer token; the pool list and another job answer 403. The job ends (JMComplete) when it is done."""
    script = open_tmp / "manager.py"
    script.write_text(MANAGER_SCRIPT)
    other = add_job(client, pool, cleanup)
    job_id = add_job(
        client,
        pool,
        cleanup,
        models.BatchJobManagerTask(
            {
                "id": "manager",
                "commandLine": f"{sys.executable} {script} {other} {marks_dir}",
                "userIdentity": ADMIN.as_dict(),
                "runExclusive": False,
                **JOB_ACCESS,
            }
        ),
    )
    assert client.get_job(job_id).job_manager_task["authenticationTokenSettings"] == {"access": ["job"]}
    wait_job_state(client, job_id, "completed")
    jm = client.get_task(job_id, "manager")
    assert jm.execution_info.result == "success", b"".join(client.download_task_file(job_id, "manager", "stderr.txt"))
    results = json.loads((marks_dir / "results.json").read_text())
    assert results["job"] == job_id
    assert results["tasks"] == ["from-manager", "manager"]
    assert results["pools"] == [403, "AuthorizationFailure"]
    assert results["other_job"] == [403, "AuthorizationFailure"]
    assert results["add_to_other_job"] == [403, "AuthorizationFailure"]
    assert [t.id for t in client.list_tasks(other)] == []
    assert client.get_task(job_id, "from-manager").execution_info.result == "success"
    assert client.get_job(job_id).execution_info.termination_reason == "JMComplete"

    token = (marks_dir / "token").read_text()
    url = f"{server.endpoint}/jobs/{job_id}?api-version=2025-06-01"
    assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}).json()["id"] == job_id
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    answer = httpx.get(url, headers={"Authorization": f"Bearer {forged}"})
    assert answer.status_code == 403 and answer.json()["code"] == "AuthenticationFailed"
    client.begin_delete_job(job_id, polling_interval=0.5).result()
    answer = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 403 and answer.json()["code"] == "AuthenticationFailed"


def test_token_only_for_tasks_that_ask_for_job_access(client, pool, cleanup, marks_dir):
    """Any task may ask for the token (authenticationTokenSettings is a task field too); others get none."""
    job_id = add_job(client, pool, cleanup)
    printenv = "umask 0; printenv AZ_BATCH_AUTHENTICATION_TOKEN > {marks}/$AZ_BATCH_TASK_ID; true"
    client.create_task(
        job_id,
        models.BatchTaskCreateOptions(
            {"id": "with", "commandLine": shell(printenv.format(marks=marks_dir)), **JOB_ACCESS}
        ),
    )
    client.create_task(
        job_id, models.BatchTaskCreateOptions(id="without", command_line=shell(printenv.format(marks=marks_dir)))
    )
    wait_tasks_completed(client, job_id)
    assert (marks_dir / "with").read_text().startswith("kjt1.")
    assert (marks_dir / "without").read_text() == ""
    assert client.get_task(job_id, "with")["authenticationTokenSettings"] == {"access": ["job"]}


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "jm, code, prop",
    [
        ({"id": "m"}, "MissingRequiredProperty", "jobManagerTask.commandLine"),
        ({"id": "bad id!", "commandLine": "/bin/true"}, "InvalidPropertyValue", "jobManagerTask.id"),
        ({"id": "jobpreparation", "commandLine": "/bin/true"}, "InvalidPropertyValue", "jobManagerTask.id"),
        (
            {"id": "m", "commandLine": "/bin/true", "requiredSlots": 0},
            "InvalidPropertyValue",
            "jobManagerTask.requiredSlots",
        ),
        (
            {"id": "m", "commandLine": "/bin/true", "authenticationTokenSettings": {"access": ["pool"]}},
            "InvalidPropertyValue",
            "authenticationTokenSettings.access",
        ),
    ],
)
def test_invalid_job_manager_is_400_and_no_job_is_created(client, server, pool, jm, code, prop):
    job_id = unique("badjm")
    body = {
        "id": job_id,
        "poolInfo": {"poolId": pool},
        "jobManagerTask": jm,
        "jobPreparationTask": {"commandLine": "/bin/true"},
    }
    answer = _raw_post(server, "/jobs", body)
    assert answer.status_code == 400, answer.text
    error = answer.json()
    assert error["code"] == code
    assert {"key": "PropertyName", "value": prop} in error["values"]
    with pytest.raises(ResourceNotFoundError):
        client.get_job(job_id)


def test_bearer_token_that_is_not_ours_is_403(server):
    answer = httpx.get(f"{server.endpoint}/pools?api-version=2025-06-01", headers={"Authorization": "Bearer abc"})
    assert answer.status_code == 403 and answer.json()["code"] == "AuthenticationFailed"


def _raw_post(server, path: str, body: dict) -> httpx.Response:
    from kiln.api.client_auth import SharedKeyAuth

    with httpx.Client(auth=SharedKeyAuth(server.account_name, server.account_key)) as http:
        return http.post(
            f"{server.endpoint}{path}?api-version=2025-06-01",
            json=body,
            headers={"Content-Type": "application/json; odata=minimalmetadata"},
        )
