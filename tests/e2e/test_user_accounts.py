"""Named user accounts of a pool (userAccounts) and userIdentity.username, for tasks and job prep/release."""

from __future__ import annotations

import pytest
from azure.batch import models
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from kiln.testing import (
    UBUNTU,
    create_pool_and_wait,
    read_node_file,
    read_task_file,
    shell,
    terminate_job,
    unique,
    wait_tasks_completed,
)

pytestmark = pytest.mark.root("accounts are switched only when the server runs as root")


def _as(name: str) -> models.UserIdentity:
    return models.UserIdentity(username=name)


@pytest.fixture(scope="module")
def users_pool(client) -> str:
    pool_id = create_pool_and_wait(
        client,
        nodes=1,
        slots=2,
        user_accounts=[
            models.UserAccount(name="worker", password="not-used-1"),
            models.UserAccount(
                name="fixed",
                password="not-used-2",
                linux_user_configuration=models.LinuxUserConfiguration(uid=4711, gid=4712),
            ),
            models.UserAccount(name="boss", password="not-used-3", elevation_level="admin"),
        ],
    )
    yield pool_id
    client.begin_delete_pool(pool_id, polling_interval=1).result()


def test_the_pool_returns_its_accounts_without_secrets(client, users_pool) -> None:
    accounts = {a.name: a for a in client.get_pool(users_pool).user_accounts}
    assert set(accounts) == {"worker", "fixed", "boss"}
    assert accounts["worker"].elevation_level == "nonadmin" and accounts["boss"].elevation_level == "admin"
    assert (accounts["fixed"].linux_user_configuration.uid, accounts["fixed"].linux_user_configuration.gid) == (
        4711,
        4712,
    )
    assert all(a.password is None for a in accounts.values())


def test_every_step_kind_runs_as_the_named_account(client, users_pool) -> None:
    job_id = unique("users")
    client.create_job(
        models.BatchJobCreateOptions(
            id=job_id,
            pool_info=models.BatchPoolInfo(pool_id=users_pool),
            job_preparation_task=models.BatchJobPreparationTask(
                command_line=shell("id -u; echo $USER"), user_identity=_as("worker")
            ),
            job_release_task=models.BatchJobReleaseTask(command_line="id -u", user_identity=_as("worker")),
        )
    )
    client.create_tasks(
        job_id,
        [
            models.BatchTaskCreateOptions(
                id="worker", command_line=shell("id -u; echo $USER"), user_identity=_as("worker")
            ),
            models.BatchTaskCreateOptions(id="fixed", command_line=shell("id -u; id -g"), user_identity=_as("fixed")),
            models.BatchTaskCreateOptions(
                id="boss", command_line=shell("id -u; echo $USER"), user_identity=_as("boss")
            ),
            models.BatchTaskCreateOptions(id="ghost", command_line="id -u", user_identity=_as("ghost")),
        ],
    )
    tasks = {t.id: t for t in wait_tasks_completed(client, job_id, 60)}
    worker = read_task_file(client, job_id, "worker", "stdout.txt").split()
    assert worker[1] == "worker" and worker[0] not in ("0", "4711")
    assert read_task_file(client, job_id, "fixed", "stdout.txt") == "4711\n4712\n"
    assert read_task_file(client, job_id, "boss", "stdout.txt") == "0\nboss\n"  # root, under the account's name
    ghost = tasks["ghost"].execution_info
    assert ghost.result == "failure" and ghost.exit_code is None
    assert (ghost.failure_info.category, ghost.failure_info.code) == ("usererror", "UserAccountNotFound")

    node_id = tasks["worker"].node_info.node_id
    prep = read_node_file(client, users_pool, node_id, f"workitems/{job_id}/job-1/jobpreparation/stdout.txt")
    assert prep.split() == worker
    terminate_job(client, job_id)
    release = read_node_file(client, users_pool, node_id, f"workitems/{job_id}/job-1/jobrelease/stdout.txt")
    assert release == f"{worker[0]}\n"
    client.begin_delete_job(job_id, polling_interval=1).result()


@pytest.mark.parametrize(
    ("account", "prop"),
    [
        (
            models.UserAccount(
                name="half", password="x", linux_user_configuration=models.LinuxUserConfiguration(uid=5)
            ),
            "userAccounts[0].linuxUserConfiguration.uid",
        ),
        (
            models.UserAccount(
                name="sneaky", password="x", linux_user_configuration=models.LinuxUserConfiguration(uid=0, gid=0)
            ),
            "userAccounts[0].linuxUserConfiguration.uid",
        ),
    ],
)
def test_bad_accounts_are_rejected_and_no_pool_is_made(client, account, prop) -> None:
    pool_id = unique("badusers")
    with pytest.raises(HttpResponseError) as caught:
        client.create_pool(
            models.BatchPoolCreateOptions(
                id=pool_id, vm_size="standard_d2s_v3", virtual_machine_configuration=UBUNTU, user_accounts=[account]
            )
        )
    assert caught.value.status_code == 400
    assert caught.value.error.code == "InvalidPropertyValue"
    assert any(d.code == "PropertyName" and d.message == prop for d in caught.value.error.details)
    with pytest.raises(ResourceNotFoundError):
        client.get_pool(pool_id)


def test_two_accounts_of_one_name_are_rejected(client) -> None:
    with pytest.raises(HttpResponseError) as caught:
        client.create_pool(
            models.BatchPoolCreateOptions(
                id=unique("dupusers"),
                vm_size="standard_d2s_v3",
                virtual_machine_configuration=UBUNTU,
                user_accounts=[
                    models.UserAccount(name="same", password="x"),
                    models.UserAccount(name="Same", password="y"),
                ],
            )
        )
    assert caught.value.status_code == 400 and caught.value.error.code == "InvalidPropertyValue"
