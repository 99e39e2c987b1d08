"""Helpers for driving a Kiln server with the official SDK: the end-to-end tests, the demo and bench/ use them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

import httpx
from azure.batch import BatchClient, models
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.core.polling import LROPoller

from kiln.api.client_auth import SharedKeyAuth
from kiln.cli.embedded import EmbeddedServer

T = TypeVar("T")


def wait_for(condition: Callable[[], T | None], timeout: float = 60, what: str = "condition") -> T:
    """Poll until `condition()` is truthy; no fixed sleeps in tests."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def make_client(server: EmbeddedServer, key: str | None = None) -> BatchClient:
    return BatchClient(server.endpoint, AzureNamedKeyCredential(server.account_name, key or server.account_key))


#: The image a test pool names (virtualMachineConfiguration is required, as on Azure): Ubuntu 22.04 as
#: listSupportedImages lists it. UBUNTU_DOC is the same as raw JSON.
UBUNTU = models.VirtualMachineConfiguration(
    image_reference=models.BatchVmImageReference(
        publisher="canonical", offer="0001-com-ubuntu-server-jammy", sku="22_04-lts"
    ),
    node_agent_sku_id="batch.node.ubuntu 22.04",
)
UBUNTU_DOC = UBUNTU.as_dict()


def pool_options(pool_id: str, **fields) -> models.BatchPoolCreateOptions:
    """A test pool's create body: a VM size and the UBUNTU image unless `fields` name others."""
    return models.BatchPoolCreateOptions(
        id=pool_id, **{"vm_size": "standard_d2s_v3", "virtual_machine_configuration": UBUNTU, **fields}
    )


def create_pool_and_wait(
    client: BatchClient, nodes: int = 2, slots: int = 1, pool_id: str | None = None, **extra
) -> str:
    pool_id = pool_id or f"pool-{uuid.uuid4().hex[:8]}"
    client.create_pool(pool_options(pool_id, target_dedicated_nodes=nodes, task_slots_per_node=slots, **extra))
    wait_for(
        lambda: (
            client.get_pool(pool_id).allocation_state == "steady"
            and all(n.state == "idle" for n in client.list_nodes(pool_id))
        ),
        120,
        f"pool {pool_id} steady",
    )
    return pool_id


def wait_tasks_completed(client: BatchClient, job_id: str, timeout: float = 120) -> list:
    def done():
        tasks = list(client.list_tasks(job_id))
        return tasks if tasks and all(t.state == "completed" for t in tasks) else None

    return wait_for(done, timeout, f"tasks of {job_id} completed")


def wait_job_state(client: BatchClient, job_id: str, state: str, timeout: float = 60):
    return wait_for(lambda: client.get_job(job_id).state == state, timeout, f"job {job_id} {state}")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def shell(script: str) -> str:
    """A command line that runs `script` in bash (Batch runs command lines without a shell)."""
    return "/bin/bash -c " + "'" + script.replace("'", "'\"'\"'") + "'"


def read_node_file(client: BatchClient, pool_id: str, node_id: str, path: str) -> str:
    return b"".join(client.download_node_file(pool_id, node_id, path)).decode()


def restart_node(
    client: BatchClient, pool_id: str, node_id: str, kind: str = "reboot", option: str = "requeue"
) -> LROPoller[None]:
    """Ask for a node's reboot or reimage with `option` for its running tasks; its poller (`.result()` waits)."""
    from azure.batch.models._models import BatchNodeRebootOptions, BatchNodeReimageOptions  # not exported

    if kind == "reboot":
        return client.begin_reboot_node(
            pool_id, node_id, BatchNodeRebootOptions(node_reboot_kind=option), polling_interval=1
        )
    assert kind == "reimage", kind
    return client.begin_reimage_node(
        pool_id, node_id, BatchNodeReimageOptions(node_reimage_option=option), polling_interval=1
    )


def node_operation_answers(client: BatchClient, pool_id: str, node_id: str, *operations: str) -> dict[str, str]:
    """Ask for node operations (reboot, reimage, deallocate: each with requeue; start) on one node, in turn, and
    say what each answered: the code of its 409, or "accepted" (then not waited for)."""
    from azure.batch.models._models import BatchNodeDeallocateOptions

    calls: dict[str, Callable[[], object]] = {
        "reboot": lambda: restart_node(client, pool_id, node_id, "reboot"),
        "reimage": lambda: restart_node(client, pool_id, node_id, "reimage"),
        "deallocate": lambda: client.begin_deallocate_node(
            pool_id, node_id, BatchNodeDeallocateOptions(node_deallocate_option="requeue")
        ),
        "start": lambda: client.begin_start_node(pool_id, node_id),
    }
    answers: dict[str, str] = {}
    for operation in operations:
        try:
            calls[operation]()  # the SDK sends the request at once; its poller is not waited for
            answers[operation] = "accepted"
        except ResourceExistsError as refused:
            code = refused.error.code if refused.error else None
            answers[operation] = code or f"{refused.status_code} without a code"
    return answers


def read_task_file(client: BatchClient, job_id: str, task_id: str, path: str) -> str:
    return b"".join(client.download_task_file(job_id, task_id, path)).decode()


def task_file_if_made(client: BatchClient, job_id: str, task_id: str, path: str) -> str | None:
    """A file a running task has yet to make answers 404: a task is running from its dispatch, before its
    node has made its directory and stdout.txt (as on Azure, where it downloads its resource files first)."""
    try:
        return read_task_file(client, job_id, task_id, path)
    except ResourceNotFoundError:
        return None


def terminate_job(client: BatchClient, job_id: str, reason: str | None = None, polling_interval: float = 0.5) -> None:
    """Terminate and wait.

    SDK 15.1 cannot send a terminate with no reason: an empty options object is falsy and its request builder
    then fails on the missing content type. So the default reason is sent explicitly.
    """
    from azure.batch.models._models import BatchJobTerminateOptions

    options = BatchJobTerminateOptions(termination_reason=reason or "UserTerminate")
    # the SDK annotates polling_interval as int; its poller hands it to time.sleep, which takes fractions
    client.begin_terminate_job(job_id, options=options, polling_interval=polling_interval).result()  # type: ignore[arg-type]


def wait_task_counts(
    client: BatchClient,
    job_id: str,
    n: int,
    timeout: float,
    poll: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    start: float | None = None,
) -> None:
    """Poll the job's task counts (cheap on the server, unlike listing tasks) until n tasks have completed."""
    began = clock() if start is None else start
    while True:
        counts = client.get_job_task_counts(job_id).task_counts
        if counts.completed >= n:
            return
        if clock() - began > timeout:
            raise TimeoutError(
                f"job {job_id}: after {timeout} s only {counts.completed} of {n} tasks completed "
                f"({counts.active} active, {counts.running} running)"
            )
        time.sleep(poll)


def run_cli(server: EmbeddedServer, *args: str) -> subprocess.CompletedProcess:
    """`kiln ARGS…` in a subprocess, pointed at the server with its account."""
    env = {
        **os.environ,
        "KILN_ENDPOINT": server.endpoint,
        "KILN_ACCOUNT_NAME": server.account_name,
        "KILN_ACCOUNT_KEY": server.account_key,
        "COLUMNS": "400",  # one table row per line
    }
    return subprocess.run(
        [sys.executable, "-m", "kiln.cli.main", *args], capture_output=True, text=True, timeout=120, env=env
    )


def preempt_node(server: EmbeddedServer, pool_id: str, node_id: str) -> httpx.Response:
    """POST /kiln/pools/{pool}/nodes/{node}/preempt (a spot node taken back), signed with the server's account."""
    auth = SharedKeyAuth(server.account_name, server.account_key)
    return httpx.post(f"{server.endpoint}/kiln/pools/{pool_id}/nodes/{node_id}/preempt", auth=auth, timeout=30)


def story_response(server: EmbeddedServer, job_id: str, task_id: str) -> httpx.Response:
    """GET /kiln/jobs/{job}/tasks/{task}/story, signed with the server's account."""
    auth = SharedKeyAuth(server.account_name, server.account_key)
    return httpx.get(f"{server.endpoint}/kiln/jobs/{job_id}/tasks/{task_id}/story", auth=auth, timeout=30)


def task_story(server: EmbeddedServer, job_id: str, task_id: str) -> dict:
    """A task's story: its transitions and why it is where it is."""
    response = story_response(server, job_id, task_id)
    response.raise_for_status()
    return response.json()
