"""A node's document through the SDK: recentTasks, nodeAgentInfo, virtualMachineInfo, isDedicated, and a
task's affinityInfo naming a node's affinityId."""

from __future__ import annotations

from azure.batch import models

from kiln.testing import create_pool_and_wait, unique, wait_tasks_completed

IMAGE = models.BatchVmImageReference(
    publisher="canonical", offer="0001-com-ubuntu-server-jammy", sku="22_04-lts", version="latest"
)


def test_node_detail_and_affinity(client, cleanup):
    vm = models.VirtualMachineConfiguration(image_reference=IMAGE, node_agent_sku_id="batch.node.ubuntu 22.04")
    pool_id = create_pool_and_wait(client, nodes=2, slots=2, virtual_machine_configuration=vm)
    cleanup(pool=pool_id)
    # spread puts a task on an idle pool's first node by id: affinity must take these to the other one
    wanted = max(n.id for n in client.list_nodes(pool_id))
    wanted_node = client.get_node(pool_id, wanted)
    job_id = unique("job")
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id)))
    cleanup(job=job_id)
    for index in range(3):
        client.create_task(
            job_id,
            models.BatchTaskCreateOptions(
                id=f"t{index}",
                command_line="/bin/true",
                affinity_info=models.BatchAffinityInfo(affinity_id=wanted_node.affinity_id),
            ),
        )
        wait_tasks_completed(client, job_id)
    assert {t.node_info.node_id for t in client.list_tasks(job_id)} == {wanted}

    node = client.get_node(pool_id, wanted)
    assert node.is_dedicated is True
    assert node.node_agent_info.version.startswith("kiln-") and node.node_agent_info.last_update_time
    image = node.virtual_machine_info.image_reference
    assert (image.publisher, image.offer, image.sku) == (IMAGE.publisher, IMAGE.offer, IMAGE.sku)
    recent = node.recent_tasks
    assert [r.task_id for r in recent] == ["t2", "t1", "t0"]  # latest first
    assert all(r.job_id == job_id and r.task_state == "completed" for r in recent)
    assert all(r.execution_info.exit_code == 0 and r.task_url.endswith(f"/tasks/{r.task_id}") for r in recent)
    listed = {n.id: n for n in client.list_nodes(pool_id)}
    assert [r.task_id for r in listed[wanted].recent_tasks] == ["t2", "t1", "t0"]
    assert not listed[min(listed)].recent_tasks
