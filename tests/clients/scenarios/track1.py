"""The client matrix's scenario for azure-batch 9.x-14.x (msrest's BatchServiceClient)."""

import azure.batch.models as m
from azure.batch import BatchServiceClient
from azure.batch.batch_auth import SharedKeyCredentials
from common import (
    ACCOUNT,
    AUTO_FORMULA,
    AUTO_POOL,
    COUNTS_FILTER,
    DISABLE_OPTION,
    ENDPOINT,
    EVALUATED_FORMULA,
    IMAGE,
    JOB,
    KEY,
    MANY,
    NODE_AGENT,
    OUTPUT_BLOB,
    OUTPUT_URL,
    POOL,
    PREP,
    RELEASE,
    SINGLE,
    report,
    wait,
)

client = BatchServiceClient(SharedKeyCredentials(ACCOUNT, KEY), batch_url=ENDPOINT)
image = m.VirtualMachineConfiguration(image_reference=m.ImageReference(**IMAGE), node_agent_sku_id=NODE_AGENT)
client.pool.add(
    m.PoolAddParameter(
        id=POOL,
        vm_size="standard_d2s_v3",
        virtual_machine_configuration=image,
        target_dedicated_nodes=1,
        task_slots_per_node=2,
    )
)
wait(lambda: [n.state for n in client.compute_node.list(POOL)] == ["idle"], "an idle node")
counts_options = m.AccountListPoolNodeCountsOptions(filter=COUNTS_FILTER)
node_counts = [c.dedicated for c in client.account.list_pool_node_counts(counts_options)]
images = [
    (i.image_reference.publisher, i.image_reference.offer, i.image_reference.sku, i.node_agent_sku_id)
    for i in client.account.list_supported_images()
]
(node,) = client.compute_node.list(POOL)
client.compute_node.disable_scheduling(POOL, node.id, node_disable_scheduling_option=DISABLE_OPTION)
scheduling = [client.compute_node.get(POOL, node.id).scheduling_state]
wait(lambda: client.compute_node.get(POOL, node.id).state == "offline", "the node to be offline")
client.compute_node.enable_scheduling(POOL, node.id)
scheduling.append(client.compute_node.get(POOL, node.id).scheduling_state)
wait(lambda: client.compute_node.get(POOL, node.id).state == "idle", "the node to be idle again")
client.pool.add(
    m.PoolAddParameter(
        id=AUTO_POOL,
        vm_size="standard_d2s_v3",
        virtual_machine_configuration=image,
        enable_auto_scale=True,
        auto_scale_formula=AUTO_FORMULA,
    )
)
autoscale = (
    client.pool.get(AUTO_POOL).auto_scale_run.results,
    client.pool.evaluate_auto_scale(AUTO_POOL, EVALUATED_FORMULA).results,
)
client.pool.delete(AUTO_POOL)
client.job.add(
    m.JobAddParameter(
        id=JOB,
        pool_info=m.PoolInformation(pool_id=POOL),
        job_preparation_task=m.JobPreparationTask(command_line=PREP),
        job_release_task=m.JobReleaseTask(command_line=RELEASE),
    )
)
upload = m.OutputFile(
    file_pattern="../stdout.txt",
    destination=m.OutputFileDestination(
        container=m.OutputFileBlobContainerDestination(container_url=OUTPUT_URL, path=OUTPUT_BLOB)
    ),
    upload_options=m.OutputFileUploadOptions(upload_condition="taskcompletion"),
)
single = m.TaskAddParameter(id="single", command_line=SINGLE, output_files=[upload] if OUTPUT_URL else None)
client.task.add(JOB, single)
added = client.task.add_collection(JOB, [m.TaskAddParameter(id=i, command_line=c) for i, c in MANY.items()])
wait(lambda: all(t.state == "completed" for t in client.task.list(JOB)), "the tasks")
tasks = {t.id: t.execution_info.exit_code for t in client.task.list(JOB)}
counts = client.job.get_task_counts(JOB).task_counts
job_stats = client.job.get(JOB, job_get_options=m.JobGetOptions(expand="stats")).stats
stats = (job_stats.num_succeeded_tasks, job_stats.num_failed_tasks, job_stats.num_task_retries)
if hasattr(client.job, "get_all_lifetime_statistics"):  # until 13.x (api-version 2022-10-01.16.0)
    lifetime = client.job.get_all_lifetime_statistics()
    assert lifetime.num_succeeded_tasks >= 2 and lifetime.user_cpu_time is not None, lifetime
    assert client.pool.get_all_lifetime_statistics().usage_stats.dedicated_core_time is not None
file_text = b"".join(client.file.get_from_task(JOB, "single", "stdout.txt")).decode()
client.job.terminate(JOB)
wait(lambda: client.job.get(JOB).state == "completed", "the job to complete")
statuses = lambda: list(client.job.list_preparation_and_release_task_status(JOB))  # noqa: E731
wait(lambda: all(s.job_release_task_execution_info for s in statuses()), "the release task")
status = [
    {"prep": s.job_preparation_task_execution_info.exit_code, "release": s.job_release_task_execution_info.exit_code}
    for s in statuses()
]
client.job.delete(JOB)
client.pool.delete(POOL)
report(
    [r.status for r in added.value],
    tasks,
    counts,
    file_text,
    status,
    stats,
    node_counts=node_counts,
    images=images,
    scheduling=scheduling,
    autoscale=autoscale,
)
