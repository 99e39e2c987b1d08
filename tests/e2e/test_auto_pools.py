"""Auto pools through the SDK, the way the official samples create jobs: poolInfo.autoPoolSpecification."""

from __future__ import annotations

import pytest
from azure.batch import models
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from kiln.testing import UBUNTU, UBUNTU_DOC, terminate_job, unique, wait_for, wait_job_state, wait_tasks_completed


def _auto_pool(
    prefix: str | None = "sample", keep_alive: bool | None = None, nodes: int = 1, slots: int = 2, lifetime: str = "job"
) -> models.BatchPoolInfo:
    return models.BatchPoolInfo(
        auto_pool_specification=models.BatchAutoPoolSpecification(
            auto_pool_id_prefix=prefix,
            pool_lifetime_option=lifetime,
            keep_alive=keep_alive,
            pool=models.BatchPoolSpecification(
                vm_size="STANDARD_A1_v2",
                target_dedicated_nodes=nodes,
                task_slots_per_node=slots,
                virtual_machine_configuration=UBUNTU,
            ),
        )
    )


def _pool_ids(client) -> set[str]:
    return {p.id for p in client.list_pools()}


def _wait_pool_gone(client, pool_id: str) -> None:
    wait_for(lambda: pool_id not in _pool_ids(client), 60, f"auto pool {pool_id} deleted")
    with pytest.raises(ResourceNotFoundError) as info:
        client.get_pool(pool_id)
    assert info.value.error.code == "PoolNotFound"


def _run_tasks(client, job_id: str, n: int = 3) -> list:
    client.create_tasks(job_id, [models.BatchTaskCreateOptions(id=f"t{i}", command_line="/bin/true") for i in range(n)])
    return wait_tasks_completed(client, job_id)


def test_sample_job_on_an_auto_pool_runs_and_its_pool_goes_with_the_job(client):
    job_id = unique("auto")
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=_auto_pool(nodes=1, slots=2)))
    job = client.get_job(job_id)
    pool_id = job.execution_info.pool_id
    assert pool_id.startswith("sample_") and len(pool_id) > len("sample_")
    assert job.pool_info.pool_id is None
    auto = job.pool_info.auto_pool_specification
    assert (auto.auto_pool_id_prefix, auto.pool_lifetime_option, auto.keep_alive) == ("sample", "job", False)
    assert auto.pool.vm_size == "STANDARD_A1_v2" and auto.pool.task_slots_per_node == 2
    pool = client.get_pool(pool_id)
    assert (pool.vm_size, pool.task_slots_per_node, pool.target_dedicated_nodes) == ("STANDARD_A1_v2", 2, 1)
    assert [j.id for j in client.list_jobs(filter=f"executionInfo/poolId eq '{pool_id}'")] == [job_id]

    tasks = _run_tasks(client, job_id)
    assert all(t.execution_info.result == "success" for t in tasks)
    assert {t.node_info.pool_id for t in tasks} == {pool_id}
    assert {n.id for n in client.list_nodes(pool_id)} >= {t.node_info.node_id for t in tasks}

    terminate_job(client, job_id)
    assert client.get_job(job_id).state == "completed"
    _wait_pool_gone(client, pool_id)
    assert client.get_job(job_id).execution_info.pool_id == pool_id  # still reported after the pool is gone


def test_keep_alive_keeps_the_pool_after_the_job(client):
    job_id = unique("keep")
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=_auto_pool(keep_alive=True, nodes=1)))
    pool_id = client.get_job(job_id).execution_info.pool_id
    _run_tasks(client, job_id, 1)
    terminate_job(client, job_id)
    client.begin_delete_job(job_id, polling_interval=0.5).result()
    assert pool_id in _pool_ids(client)
    assert client.get_pool(pool_id).state == "active"
    client.begin_delete_pool(pool_id, polling_interval=0.5).result()  # keepAlive: deleting it is up to the user
    _wait_pool_gone(client, pool_id)


def test_pool_goes_when_all_tasks_complete_ends_the_job(client):
    job_id = unique("allcomplete")
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=_auto_pool(prefix=None)))
    pool_id = client.get_job(job_id).execution_info.pool_id
    assert "_" not in pool_id and len(pool_id) == 36  # no prefix: a bare GUID
    _run_tasks(client, job_id, 2)
    client.update_job(job_id, models.BatchJobUpdateOptions(all_tasks_complete_mode="terminatejob"))
    job = wait_job_state(client, job_id, "completed") and client.get_job(job_id)
    assert job.execution_info.termination_reason == "AllTasksComplete"
    _wait_pool_gone(client, pool_id)


def test_pool_goes_when_the_job_is_deleted(client):
    job_id = unique("autodel")
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=_auto_pool()))
    pool_id = client.get_job(job_id).execution_info.pool_id
    wait_for(lambda: client.get_pool(pool_id).allocation_state == "steady", 60, "auto pool steady")
    client.begin_delete_job(job_id, polling_interval=0.5).result()
    _wait_pool_gone(client, pool_id)


def test_keep_alive_may_be_patched_on_an_active_job(client):
    job_id = unique("patchkeep")
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=_auto_pool()))
    pool_id = client.get_job(job_id).execution_info.pool_id
    client.update_job(job_id, models.BatchJobUpdateOptions(pool_info=_auto_pool(keep_alive=True)))
    assert client.get_job(job_id).pool_info.auto_pool_specification.keep_alive is True
    with pytest.raises(HttpResponseError) as info:  # anything else in poolInfo needs a disabled job
        client.update_job(job_id, models.BatchJobUpdateOptions(pool_info=_auto_pool(keep_alive=True, nodes=2)))
    assert info.value.error.code == "JobNotDisabled"
    terminate_job(client, job_id)
    assert client.get_pool(pool_id).state == "active"
    client.begin_delete_pool(pool_id, polling_interval=0.5).result()


@pytest.mark.parametrize(
    ("pool_info", "code", "prop"),
    [
        (
            {
                "poolId": "p",
                "autoPoolSpecification": {
                    "poolLifetimeOption": "job",
                    "pool": {"vmSize": "a", "virtualMachineConfiguration": UBUNTU_DOC},
                },
            },
            "InvalidPropertyValue",
            "poolInfo",
        ),
        (
            {
                "autoPoolSpecification": {
                    "poolLifetimeOption": "jobschedule",
                    "pool": {"vmSize": "a", "virtualMachineConfiguration": UBUNTU_DOC},
                }
            },
            "InvalidPropertyValue",
            "poolInfo.autoPoolSpecification.poolLifetimeOption",
        ),
        (
            {"autoPoolSpecification": {"poolLifetimeOption": "job"}},
            "MissingRequiredProperty",
            "poolInfo.autoPoolSpecification.pool",
        ),
        (
            {"autoPoolSpecification": {"pool": {"vmSize": "a", "virtualMachineConfiguration": UBUNTU_DOC}}},
            "MissingRequiredProperty",
            "poolInfo.autoPoolSpecification.poolLifetimeOption",
        ),
        (
            {
                "autoPoolSpecification": {
                    "poolLifetimeOption": "job",
                    "autoPoolIdPrefix": "x" * 21,
                    "pool": {"vmSize": "a", "virtualMachineConfiguration": UBUNTU_DOC},
                }
            },
            "InvalidPropertyValue",
            "poolInfo.autoPoolSpecification.autoPoolIdPrefix",
        ),
        (
            {
                "autoPoolSpecification": {
                    "poolLifetimeOption": "job",
                    "autoPoolIdPrefix": "bad prefix",
                    "pool": {"vmSize": "a", "virtualMachineConfiguration": UBUNTU_DOC},
                }
            },
            "InvalidPropertyValue",
            "poolInfo.autoPoolSpecification.autoPoolIdPrefix",
        ),
        (
            {
                "autoPoolSpecification": {
                    "poolLifetimeOption": "job",
                    "pool": {"vmSize": "a", "virtualMachineConfiguration": UBUNTU_DOC, "enableAutoScale": True},
                }
            },
            "InvalidPropertyValue",
            "poolInfo.autoPoolSpecification.pool.enableAutoScale",
        ),
    ],
    ids=["both", "jobschedule-on-a-job", "no-pool", "no-lifetime", "long-prefix", "bad-prefix", "autoscale"],
)
def test_bad_auto_pool_specifications_are_rejected_and_nothing_is_created(client, pool_info, code, prop):
    job_id = unique("badauto")
    pools_before = _pool_ids(client)
    with pytest.raises(HttpResponseError) as info:
        client.create_job({"id": job_id, "poolInfo": pool_info})
    assert info.value.status_code == 400
    assert info.value.error.code == code
    assert any(d.code == "PropertyName" and d.message == prop for d in info.value.error.details)
    with pytest.raises(ResourceNotFoundError):
        client.get_job(job_id)
    assert _pool_ids(client) <= pools_before  # no pool was made
