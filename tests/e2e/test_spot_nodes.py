"""Low-priority (spot) nodes through the SDK, and their preemption on demand (Kiln-specific endpoint and
`kiln node preempt`)."""

from __future__ import annotations

from azure.batch import models

from kiln.testing import (
    create_pool_and_wait,
    preempt_node,
    run_cli,
    shell,
    task_story,
    unique,
    wait_for,
    wait_tasks_completed,
)


def test_spot_pool_nodes_and_preemption_mid_task(server, client, cleanup, marks_dir):
    # each node's accounts are its own: each writes a file of its own
    start = models.BatchStartTask(command_line=shell(f"echo boot >> {marks_dir}/boots-$AZ_BATCH_NODE_ID"))
    pool_id = create_pool_and_wait(client, nodes=0, target_low_priority_nodes=2, start_task=start)
    cleanup(pool=pool_id)
    pool = client.get_pool(pool_id)
    assert (pool.current_dedicated_nodes, pool.current_low_priority_nodes, pool.target_low_priority_nodes) == (0, 2, 2)
    nodes = list(client.list_nodes(pool_id))
    assert all(n.is_dedicated is False and n.id.endswith("_p") for n in nodes)

    job_id = unique("spot")
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id)))
    cleanup(job=job_id)
    held = (
        f'echo "$AZ_BATCH_NODE_IS_DEDICATED" > {marks_dir}/dedicated;'
        f" while [ ! -e {marks_dir}/go ]; do sleep 0.05; done"
    )
    client.create_task(job_id, models.BatchTaskCreateOptions(id="t", command_line=shell(held)))
    node_id = wait_for(lambda: client.get_task(job_id, "t").node_info, 60, "task t placed").node_id
    wait_for(lambda: (marks_dir / "dedicated").exists(), 60, "task t running")
    assert (marks_dir / "dedicated").read_text().strip() == "false"

    answer = preempt_node(server, pool_id, node_id)
    assert answer.status_code == 200 and answer.json() == {"poolId": pool_id, "nodeId": node_id, "state": "preempted"}
    # as a GET shows it, for the PREEMPTED_FOR (2 s) before it returns (as a new node comes up, in `starting`)
    preempted = client.get_node(pool_id, node_id)
    assert (preempted.state, preempted.is_dedicated, preempted.running_tasks_count) == ("preempted", False, 0)
    task = client.get_task(job_id, "t")
    assert task.execution_info.requeue_count == 1 and task.execution_info.retry_count == 0
    # the task's story: the preemption as the fault that hit it, caused by the request, then its requeue
    transitions = task_story(server, job_id, "t")["transitions"]
    fault = next(r for r in transitions if r["kind"] == "fault")
    assert (fault["to"], fault["nodeId"]) == ("preempt", node_id)
    assert f"POST /kiln/pools/{pool_id}/nodes/{node_id}/preempt" in fault["stimulus"]
    requeued = [r for r in transitions[transitions.index(fault) + 1 :] if r["kind"] == "task"][0]
    assert (requeued["from"], requeued["to"], requeued["detail"]) == ("running", "active", "requeue 1")
    assert requeued["stimulus"] == fault["stimulus"]
    (marks_dir / "go").touch()
    (done,) = wait_tasks_completed(client, job_id)
    assert done.execution_info.exit_code == 0 and done.execution_info.requeue_count == 1

    # it comes back as a fresh node: its start task runs again
    wait_for(lambda: client.get_node(pool_id, node_id).state == "idle", 120, "preempted node back")
    assert (marks_dir / f"boots-{node_id}").read_text().split() == ["boot", "boot"]
    assert client.get_node(pool_id, node_id).start_task_info.result == "success"

    run = run_cli(server, "node", "preempt", pool_id, node_id)
    assert run.returncode == 0 and f"node {node_id} of pool {pool_id}: preempted" in run.stdout
    wait_for(lambda: client.get_node(pool_id, node_id).state == "idle", 120, "preempted node back again")
    run = run_cli(server, "fault", "preempt", pool_id, node_id)  # the same, among the faults
    assert run.returncode == 0 and f"node {node_id} of pool {pool_id}: preempted" in run.stdout
    wait_for(lambda: client.get_node(pool_id, node_id).state == "idle", 120, "preempted node back a third time")

    client.begin_resize_pool(
        pool_id,
        models.BatchPoolResizeOptions(target_dedicated_nodes=1, target_low_priority_nodes=1),
        polling_interval=1,
    ).result()
    pool = client.get_pool(pool_id)
    assert (pool.current_dedicated_nodes, pool.current_low_priority_nodes) == (1, 1)
    dedicated = next(n for n in client.list_nodes(pool_id) if n.is_dedicated)
    refused = preempt_node(server, pool_id, dedicated.id)
    assert refused.status_code == 409 and refused.json()["code"] == "OperationNotValidOnNode"
