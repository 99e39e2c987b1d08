"""The client matrix's scenario for azure-batch 15.x (BatchClient)."""

from azure.batch import BatchClient
from azure.batch import models as m
from azure.batch.models._models import BatchJobTerminateOptions  # not exported by 15.1
from azure.core.credentials import AzureNamedKeyCredential
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

client = BatchClient(ENDPOINT, AzureNamedKeyCredential(ACCOUNT, KEY))
image = m.VirtualMachineConfiguration(image_reference=m.BatchVmImageReference(**IMAGE), node_agent_sku_id=NODE_AGENT)
client.create_pool(
    m.BatchPoolCreateOptions(
        id=POOL,
        vm_size="standard_d2s_v3",
        virtual_machine_configuration=image,
        target_dedicated_nodes=1,
        task_slots_per_node=2,
    )
)
wait(lambda: [n.state for n in client.list_nodes(POOL)] == ["idle"], "an idle node")
node_counts = [c.dedicated for c in client.list_pool_node_counts(filter=COUNTS_FILTER)]
images = [
    (i.image_reference.publisher, i.image_reference.offer, i.image_reference.sku, i.node_agent_sku_id)
    for i in client.list_supported_images()
]
(node,) = client.list_nodes(POOL)
client.disable_node_scheduling(
    POOL, node.id, m.BatchNodeDisableSchedulingOptions(node_disable_scheduling_option=DISABLE_OPTION)
)
scheduling = [client.get_node(POOL, node.id).scheduling_state]
wait(lambda: client.get_node(POOL, node.id).state == "offline", "the node to be offline")
client.enable_node_scheduling(POOL, node.id)
scheduling.append(client.get_node(POOL, node.id).scheduling_state)
wait(lambda: client.get_node(POOL, node.id).state == "idle", "the node to be idle again")
client.create_pool(
    m.BatchPoolCreateOptions(
        id=AUTO_POOL,
        vm_size="standard_d2s_v3",
        virtual_machine_configuration=image,
        enable_auto_scale=True,
        auto_scale_formula=AUTO_FORMULA,
    )
)
evaluate = m.BatchPoolEvaluateAutoScaleOptions(auto_scale_formula=EVALUATED_FORMULA)
autoscale = (
    client.get_pool(AUTO_POOL).auto_scale_run.results,
    client.evaluate_pool_auto_scale(AUTO_POOL, evaluate).results,
)
client.begin_delete_pool(AUTO_POOL, polling_interval=1).result()
client.create_job(
    m.BatchJobCreateOptions(
        id=JOB,
        pool_info=m.BatchPoolInfo(pool_id=POOL),
        job_preparation_task=m.BatchJobPreparationTask(command_line=PREP),
        job_release_task=m.BatchJobReleaseTask(command_line=RELEASE),
    )
)
upload = m.OutputFile(
    file_pattern="../stdout.txt",
    destination=m.OutputFileDestination(
        container=m.OutputFileBlobContainerDestination(container_url=OUTPUT_URL, path=OUTPUT_BLOB)
    ),
    upload_options=m.OutputFileUploadConfiguration(upload_condition="taskcompletion"),
)
single = m.BatchTaskCreateOptions(id="single", command_line=SINGLE, output_files=[upload] if OUTPUT_URL else None)
client.create_task(JOB, single)
group = m.BatchTaskGroup(task_values=[m.BatchTaskCreateOptions(id=i, command_line=c) for i, c in MANY.items()])
added = client.create_task_collection(JOB, group)
wait(lambda: all(t.state == "completed" for t in client.list_tasks(JOB)), "the tasks")
tasks = {t.id: t.execution_info.exit_code for t in client.list_tasks(JOB)}
counts = client.get_job_task_counts(JOB).task_counts
job_stats = client.get_job(JOB, expand=["stats"]).job_statistics
stats = (job_stats.succeeded_tasks_count, job_stats.failed_tasks_count, job_stats.task_retries_count)
file_text = b"".join(client.download_task_file(JOB, "single", "stdout.txt")).decode()
terminate = BatchJobTerminateOptions(termination_reason="UserTerminate")
client.begin_terminate_job(JOB, options=terminate, polling_interval=1).result()
statuses = lambda: list(client.list_job_preparation_and_release_task_status(JOB))  # noqa: E731
wait(lambda: all(s.job_release_task_execution_info for s in statuses()), "the release task")
status = [
    {"prep": s.job_preparation_task_execution_info.exit_code, "release": s.job_release_task_execution_info.exit_code}
    for s in statuses()
]
client.begin_delete_job(JOB, polling_interval=1).result()
client.begin_delete_pool(POOL, polling_interval=1).result()
report(
    [r.status for r in added.result_values],
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
