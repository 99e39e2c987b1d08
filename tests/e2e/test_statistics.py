"""$expand=stats through the SDK: what the nodes measured of each task's processes, summed per job, schedule and
pool, and kept across a restart with the account's lifetime statistics."""

from __future__ import annotations

from datetime import timedelta

import httpx
from azure.batch import models

from kiln.api.client_auth import SharedKeyAuth
from kiln.cli.embedded import EmbeddedServer
from kiln.testing import create_pool_and_wait, make_client, shell, unique, wait_tasks_completed

#: burns 0.3 s of CPU, writes and syncs 1 MiB, then sleeps a second
BURN = (
    "/usr/bin/python3 -c 'import os, time\n"
    "while time.process_time() < 0.3: pass\n"
    'with open("out.bin", "wb") as f: f.write(bytes(1 << 20)); f.flush(); os.fsync(f.fileno())\n'
    "time.sleep(1)'"
)


#: the node's root launcher starts admin commands: it reads their I/O operations too
ADMIN = models.UserIdentity(
    auto_user=models.AutoUserSpecification(scope="task", elevation_level=models.ElevationLevel.ADMIN)
)


def _run_job(client, pool_id: str) -> str:
    """A job with two tasks that burn CPU (as admin, as the pool's user), one that succeeds at once and one that
    fails after a retry."""
    job_id = unique("stats")
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id)))
    client.create_tasks(
        job_id,
        [
            models.BatchTaskCreateOptions(id="burn", command_line=BURN, user_identity=ADMIN),
            models.BatchTaskCreateOptions(id="burn-as-user", command_line=BURN),
            models.BatchTaskCreateOptions(id="quick", command_line="/bin/true"),
            models.BatchTaskCreateOptions(
                id="fails",
                command_line=shell("exit 3"),
                constraints=models.BatchTaskConstraints(max_task_retry_count=1),
            ),
        ],
    )
    wait_tasks_completed(client, job_id)
    return job_id


def test_a_task_that_burns_cpu_shows_it_and_its_job_sums_its_tasks(client, pool, cleanup):
    job_id = _run_job(client, pool)
    cleanup(job=job_id)
    burn = client.get_task(job_id, "burn", expand=["stats"]).task_statistics
    assert burn.user_cpu_time + burn.kernel_cpu_time >= timedelta(seconds=0.3)
    assert burn.user_cpu_time > timedelta(0)
    assert burn.wall_clock_time >= timedelta(seconds=1)
    assert burn.write_iops > 0 and burn.write_io_gib >= 1 / 1024
    assert burn.url.endswith(f"/jobs/{job_id}/tasks/burn/stats")
    assert burn.wait_time >= timedelta(0) and burn.start_time <= burn.last_update_time
    as_user = client.get_task(job_id, "burn-as-user", expand=["stats"]).task_statistics
    assert as_user.user_cpu_time > timedelta(0) and as_user.wall_clock_time >= timedelta(seconds=1)
    assert as_user.write_io_gib >= 1 / 1024  # its operations are not counted (docs/compatibility.md)

    listed = {t.id: t.task_statistics for t in client.list_tasks(job_id, expand=["stats"])}
    assert set(listed) == {"burn", "burn-as-user", "quick", "fails"}
    assert listed["burn"].user_cpu_time == burn.user_cpu_time
    _check_a_selected_list(client, job_id)
    assert client.get_task(job_id, "burn").task_statistics is None  # only when asked for

    job = client.get_job(job_id, expand=["stats"]).job_statistics
    assert (job.succeeded_tasks_count, job.failed_tasks_count, job.task_retries_count) == (3, 1, 1)
    for name in ("user_cpu_time", "wall_clock_time"):  # each rounded to the millisecond on the wire
        total = sum((getattr(s, name) for s in listed.values()), timedelta(0))
        assert abs(getattr(job, name) - total) <= timedelta(milliseconds=len(listed)), name
    assert job.write_iops == sum(s.write_iops for s in listed.values())
    assert job.wait_time >= timedelta(0)
    (in_list,) = [j.job_statistics for j in client.list_jobs(filter=f"id eq '{job_id}'", expand=["stats"])]
    assert in_list.succeeded_tasks_count == 3


#: writes 4 MiB, syncs it and drops it from the page cache, then reads it back in 64 KiB reads: from the disk
READ_BACK = (
    "/usr/bin/python3 -c 'import os\n"
    'with open("in.bin", "wb") as f:\n'
    " f.write(os.urandom(4 << 20)); f.flush(); os.fsync(f.fileno())\n"
    " os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)\n"
    'with open("in.bin", "rb", buffering=0) as f:\n'
    " while f.read(1 << 16): pass'"
)
#: spends 0.2 s in the kernel: reads of /dev/zero, each a 64 KiB clear in kernel space
SYSCALLS = (
    "/usr/bin/python3 -c 'import os\n"
    'fd = os.open("/dev/zero", os.O_RDONLY)\n'
    "while os.times().system < 0.2: os.read(fd, 1 << 16)'"
)


def test_reads_kernel_time_and_a_wait_behind_another_task(client, pool, cleanup):
    """readIOps counts read system calls and readIOGiB the bytes that came from storage (the kernel's
    /proc/<pid>/io syscr and read_bytes: a read the page cache answers is not storage I/O), kernelCPUTime the
    time in system calls, and waitTime runs from the task's creation to its start: on a node of one slot, the
    second of two tasks waits for the first to finish."""
    job_id = unique("stats-io")
    cleanup(job=job_id)
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool)))
    client.create_tasks(
        job_id,
        [
            models.BatchTaskCreateOptions(id="reads", command_line=READ_BACK, user_identity=ADMIN),
            models.BatchTaskCreateOptions(id="syscalls", command_line=SYSCALLS),
        ],
    )
    wait_tasks_completed(client, job_id)
    reads = client.get_task(job_id, "reads", expand=["stats"])
    assert reads.execution_info.exit_code == 0, reads.execution_info.failure_info
    assert reads.task_statistics.read_iops >= 64 and reads.task_statistics.read_io_gib >= 4 / 1024
    syscalls = client.get_task(job_id, "syscalls", expand=["stats"])
    assert syscalls.execution_info.exit_code == 0, syscalls.execution_info.failure_info
    assert syscalls.task_statistics.kernel_cpu_time >= timedelta(seconds=0.2)

    one_slot = create_pool_and_wait(client, nodes=1, slots=1)
    cleanup(pool=one_slot)
    queued = unique("stats-wait")
    cleanup(job=queued)
    client.create_job(models.BatchJobCreateOptions(id=queued, pool_info=models.BatchPoolInfo(pool_id=one_slot)))
    client.create_tasks(queued, [models.BatchTaskCreateOptions(id=i, command_line="sleep 2") for i in ("a", "b")])
    wait_tasks_completed(client, queued)
    first, second = sorted(
        (client.get_task(queued, i, expand=["stats"]) for i in ("a", "b")), key=lambda t: t.execution_info.start_time
    )
    assert second.execution_info.start_time >= first.execution_info.end_time  # one slot: one after the other
    assert second.task_statistics.wait_time >= timedelta(seconds=1.9)  # the first's 2 s, at least
    assert second.task_statistics.wait_time >= first.task_statistics.wait_time + timedelta(seconds=1.9)
    job = client.get_job(queued, expand=["stats"]).job_statistics
    total = first.task_statistics.wait_time + second.task_statistics.wait_time
    assert abs(job.wait_time - total) <= timedelta(milliseconds=2)  # each rounded to the millisecond on the wire


def test_a_pools_statistics_count_its_nodes_time_and_its_tasks_io(client, pool, cleanup):
    cleanup(job=_run_job(client, pool))
    stats = client.get_pool(pool, expand=["stats"]).pool_statistics
    assert stats.usage_statistics.dedicated_core_time > timedelta(0)
    resources = stats.resource_statistics
    assert resources.disk_write_iops > 0 and resources.disk_write_gib >= 1 / 1024
    assert 0 < resources.avg_cpu_percentage and resources.peak_memory_gib > 0
    assert [p.pool_statistics for p in client.list_pools(filter=f"id eq '{pool}'", expand=["stats"])][0] is not None


def test_a_schedules_statistics_sum_its_jobs(client, pool, cleanup):
    schedule_id = unique("stats-schedule")
    client.create_job_schedule(
        models.BatchJobScheduleCreateOptions(
            id=schedule_id,
            schedule=models.BatchJobScheduleConfiguration(recurrence_interval=timedelta(days=1)),
            job_specification=models.BatchJobSpecification(
                pool_info=models.BatchPoolInfo(pool_id=pool),
                job_manager_task=models.BatchJobManagerTask(id="manager", command_line="/bin/true"),
            ),
        )
    )
    try:
        job_id = _wait_for_recent_job(client, schedule_id)
        wait_tasks_completed(client, job_id)
        stats = client.get_job_schedule(schedule_id, expand=["stats"]).job_schedule_statistics
        assert stats.succeeded_tasks_count == 1 and stats.wall_clock_time > timedelta(0)
        (listed,) = [
            s.job_schedule_statistics
            for s in client.list_job_schedules(filter=f"id eq '{schedule_id}'", expand=["stats"])
        ]
        assert listed.succeeded_tasks_count == 1
    finally:
        client.begin_delete_job_schedule(schedule_id, polling_interval=0.5).result()


def _wait_for_recent_job(client, schedule_id: str) -> str:
    from kiln.testing import wait_for

    def recent() -> str | None:
        info = client.get_job_schedule(schedule_id).execution_info
        return info.recent_job.id if info and info.recent_job else None

    return wait_for(recent, 60, "the schedule's first job")


def _lifetime(server: EmbeddedServer, kind: str) -> dict:
    response = httpx.get(
        f"{server.endpoint}/lifetime{kind}stats",
        params={"api-version": "2022-01-01.15.0"},
        auth=SharedKeyAuth(server.account_name, server.account_key),
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_statistics_survive_a_restart_and_the_account_keeps_its_lifetime_statistics(open_tmp):
    data = open_tmp / "data"
    server = EmbeddedServer(data).start()
    try:
        client = make_client(server)
        pool_id = create_pool_and_wait(client, nodes=1, pool_id="stats-pool")
        job_id = _run_job(client, pool_id)
        before = client.get_job(job_id, expand=["stats"]).job_statistics
        task_before = client.get_task(job_id, "burn", expand=["stats"]).task_statistics
        assert server.stop() == 0
        server = EmbeddedServer(data, port=server.port).start()
        client = make_client(server)
        assert client.get_job(job_id, expand=["stats"]).job_statistics.as_dict() == before.as_dict()
        assert client.get_task(job_id, "burn", expand=["stats"]).task_statistics.as_dict() == task_before.as_dict()

        jobs = _lifetime(server, "job")
        assert (jobs["numSucceededTasks"], jobs["numFailedTasks"], jobs["numTaskRetries"]) == ("3", "1", "1")
        client.begin_delete_job(job_id, polling_interval=0.5).result()
        assert _lifetime(server, "job")["numSucceededTasks"] == "3"  # the account's outlive the job's
        pools = _lifetime(server, "pool")
        assert pools["usageStats"]["dedicatedCoreTime"] != "PT0S"
        assert int(pools["resourceStats"]["diskWriteIOps"]) > 0
    finally:
        server.stop()


def _check_a_selected_list(client, job_id: str) -> None:
    """$select reads only some columns (store.task_pages): what it names is what the whole list shows."""
    whole = {t.id: t for t in client.list_tasks(job_id, expand=["stats"])}
    names = ["id", "executionInfo", "nodeInfo", "stats"]
    for task in client.list_tasks(job_id, expand=["stats"], select=names, max_results=3):
        full = whole[task.id]
        assert (task.execution_info, task.node_info) == (full.execution_info, full.node_info)
        assert task.task_statistics.wall_clock_time == full.task_statistics.wall_clock_time
        assert task.command_line is None and task.state is None
