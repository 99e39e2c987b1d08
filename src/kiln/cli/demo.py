"""`kiln demo`: Azure's job preparation and release sample, driven by the official azure-batch SDK."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console

from kiln.cli.embedded import EmbeddedServer
from kiln.testing import UBUNTU, terminate_job, wait_for

POOL_ID = "JobPrepReleaseSamplePool"
JOB_ID = "JobPrepReleaseSampleJob"
SHARED_FILE = "job_prep_and_release.txt"
TASK_IDS = [f"task{i:03d}" for i in range(1, 9)]


def _shell(script: str) -> str:
    return f"/bin/bash -c '{script}'"


def run_scenario(client, console: Console) -> dict[str, str]:
    """The sample's steps; returns each node's shared file contents (for tests)."""
    from azure.batch import models

    console.print(f"Creating pool [{POOL_ID}]...")
    client.create_pool(
        models.BatchPoolCreateOptions(
            id=POOL_ID, vm_size="standard_d1_v2", target_dedicated_nodes=2, virtual_machine_configuration=UBUNTU
        )
    )
    wait_for(
        lambda: (
            all(n.state == "idle" for n in client.list_nodes(POOL_ID)) and len(list(client.list_nodes(POOL_ID))) == 2
        ),
        120,
        "the pool's nodes",
    )

    console.print(f"Creating job [{JOB_ID}]...")
    client.create_job(
        models.BatchJobCreateOptions(
            id=JOB_ID,
            pool_info=models.BatchPoolInfo(pool_id=POOL_ID),
            job_preparation_task=models.BatchJobPreparationTask(
                command_line=_shell(f'echo "$AZ_BATCH_NODE_ID tasks:" > "$AZ_BATCH_NODE_SHARED_DIR/{SHARED_FILE}"')
            ),
            job_release_task=models.BatchJobReleaseTask(
                command_line=_shell(f'rm "$AZ_BATCH_NODE_SHARED_DIR/{SHARED_FILE}"')
            ),
        )
    )

    console.print("Submitting tasks and awaiting completion...")
    client.create_tasks(
        JOB_ID,
        [
            models.BatchTaskCreateOptions(
                id=task_id, command_line=_shell(f'echo {task_id} >> "$AZ_BATCH_NODE_SHARED_DIR/{SHARED_FILE}"')
            )
            for task_id in TASK_IDS
        ],
    )
    wait_for(lambda: all(t.state == "completed" for t in client.list_tasks(JOB_ID)), 120, "the tasks")
    console.print("All tasks completed.\n")

    contents: dict[str, str] = {}
    for node in client.list_nodes(POOL_ID):
        text = b"".join(client.download_node_file(POOL_ID, node.id, f"shared/{SHARED_FILE}")).decode()
        contents[node.id] = text
        console.print(f"Node: {node.id}")
        console.print("Tasks run on this node:")
        console.print(text.rstrip(), highlight=False)
        console.print("")

    console.print(f"Waiting for job {JOB_ID} to reach state completed")
    terminate_job(client, JOB_ID)
    console.print("")
    for status in client.list_job_preparation_and_release_task_status(JOB_ID):
        prep = status.job_preparation_task_execution_info
        release = status.job_release_task_execution_info
        console.print(f"Node: {status.node_id}")
        console.print(f"  Prep task exit code:    {prep.exit_code if prep else '-'}")
        console.print(f"  Release task exit code: {release.exit_code if release else '-'}")
    console.print("")
    for node_id in contents:
        left = [
            f.name for f in client.list_node_files(POOL_ID, node_id, recursive=True) if f.name.endswith(SHARED_FILE)
        ]
        console.print(f"Node {node_id}: shared file {'still there' if left else 'deleted by the release task'}")
    console.print("")

    console.print(f"Deleting job {JOB_ID}")
    client.begin_delete_job(JOB_ID, polling_interval=0.5).result()
    console.print(f"Deleting pool {POOL_ID}")
    client.begin_delete_pool(POOL_ID, polling_interval=0.5).result()
    return contents


def run_demo(*, port: int, keep: bool, console: Console) -> int:
    from azure.batch import BatchClient
    from azure.core.credentials import AzureNamedKeyCredential

    data_dir = Path(tempfile.mkdtemp(prefix="kiln-demo-"))
    data_dir.chmod(0o755)  # non-admin task accounts must be able to reach their node directories
    console.print(f"Sample start: {time.strftime('%Y-%m-%d %H:%M:%S')}")
    console.print(f"Starting an embedded Kiln server (data in {data_dir})", highlight=False)
    try:
        with EmbeddedServer(data_dir, port) as server:
            client = BatchClient(server.endpoint, AzureNamedKeyCredential(server.account_name, server.account_key))
            run_scenario(client, console)
        console.print(f"Sample end: {time.strftime('%Y-%m-%d %H:%M:%S')}")
        return 0
    finally:
        if not keep:
            shutil.rmtree(data_dir, ignore_errors=True)
