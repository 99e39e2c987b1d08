"""Kiln across three hosts made of network namespaces (kiln.testing_netns): the Dask scheduler, PostgreSQL and
`kiln serve` in host 1, a `kiln worker` in hosts 2 and 3, every process on its host's own address, over TLS;
driven with azure-batch 15.1.0 from the root namespace over the bridge. One cluster and one pool of two nodes
(one per worker host) for the whole module: each test leaves both nodes idle."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.batch import BatchClient, models

from kiln.testing import (
    create_pool_and_wait,
    make_client,
    read_node_file,
    read_task_file,
    shell,
    task_story,
    terminate_job,
    unique,
    wait_for,
    wait_tasks_completed,
)
from kiln.testing_netns import KilnOnHosts, NetnsCluster, kiln_on_hosts

WORKER_HOSTS = ("host-2", "host-3")
#: Bound of a wait for a host's loss (2 x testing_netns.HOST_LEASE after a cut) or return.
LOSS_WAIT = 120


@pytest.fixture(scope="module")
def kiln(netns: NetnsCluster) -> Iterator[KilnOnHosts]:
    with kiln_on_hosts(netns) as running:
        yield running


@pytest.fixture(scope="module")
def pool_id(kiln: KilnOnHosts) -> str:
    pool_id = create_pool_and_wait(make_client(kiln.server), nodes=2, slots=2, pool_id="hosts-pool")
    assert {kiln.host_of(node.id) for node in make_client(kiln.server).list_nodes(pool_id)} == set(WORKER_HOSTS)
    return pool_id


def node_states(kiln: KilnOnHosts, client: BatchClient, pool_id: str) -> dict[str, str]:
    """Each node's state, by the name of its host."""
    return {kiln.host_of(node.id): node.state for node in client.list_nodes(pool_id)}


def both_idle(kiln: KilnOnHosts, pool_id: str) -> None:
    client = make_client(kiln.server)
    wait_for(lambda: node_states(kiln, client, pool_id) == dict.fromkeys(WORKER_HOSTS, "idle"), LOSS_WAIT, "idle")


def back(kiln: KilnOnHosts, pool_id: str, name: str) -> None:
    """Until the host's node is idle again: the host rejoins by itself, or its worker, dropped by the scheduler,
    has ended and is started again here, as its supervisor (systemd, a batch system) would."""
    process, client = kiln.cluster.hosts[name].process, make_client(kiln.server)
    assert process is not None
    wait_for(lambda: process.poll() is not None or node_states(kiln, client, pool_id)[name] == "idle", LOSS_WAIT)
    if process.poll() is not None:
        kiln.cluster.start_host(name)
    both_idle(kiln, pool_id)


def blocked(task_id: str, marks: Path) -> models.BatchTaskCreateOptions:
    """A task that marks each run with its PID (a file of its own: runs on other nodes run as other users), then
    runs until the test makes the mark `go`."""
    script = f"touch {marks}/started-{task_id}-$$; while [ ! -e {marks}/go ]; do sleep 0.1; done"
    return models.BatchTaskCreateOptions(id=task_id, command_line=shell(script))


def started(marks: Path) -> dict[str, list[int]]:
    """The PIDs of each task's runs so far."""
    runs: dict[str, list[int]] = {}
    for path in marks.glob("started-*"):
        task, pid = path.name.removeprefix("started-").rsplit("-", 1)
        runs.setdefault(task, []).append(int(pid))
    return runs


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def start_blocked_job(kiln: KilnOnHosts, pool_id: str, marks: Path) -> tuple[BatchClient, str, dict[str, str]]:
    """A job of four blocked tasks, two on each node; returns the host of each task."""
    client, job_id = make_client(kiln.server), unique("hosts")
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id)))
    client.create_tasks(job_id, [blocked(f"t{i}", marks) for i in range(4)])
    wait_for(lambda: len(started(marks)) == 4, 60, "four tasks started")
    return client, job_id, {t.id: kiln.host_of(t.node_info.node_id) for t in client.list_tasks(job_id)}


def test_seed_scenario_across_hosts(kiln: KilnOnHosts, pool_id: str) -> None:
    """Azure's preparation and release sample: prep once on each host's node, 8 tasks, release on every host; the
    nodes' files live on their hosts and are read (whole and ranged) and listed through the server in host 1."""
    client, job_id, log = make_client(kiln.server), unique("seed"), "shared/job_prep_and_release.txt"
    whereami = f"{shutil.which('ip')} -4 -o addr show dev eth0 >> $AZ_BATCH_NODE_ROOT_DIR/{log}.released"
    client.create_job(
        models.BatchJobCreateOptions(
            id=job_id,
            pool_info=models.BatchPoolInfo(pool_id=pool_id),
            job_preparation_task=models.BatchJobPreparationTask(
                command_line=shell(f"echo $AZ_BATCH_NODE_ID tasks: > $AZ_BATCH_NODE_ROOT_DIR/{log}")
            ),
            job_release_task=models.BatchJobReleaseTask(command_line=shell(whereami)),
        )
    )
    client.create_tasks(
        job_id,
        [
            models.BatchTaskCreateOptions(
                id=f"t{i}", command_line=shell(f"echo t{i} >> $AZ_BATCH_NODE_ROOT_DIR/{log}; echo out-t{i}")
            )
            for i in range(8)
        ],
    )
    finished = wait_tasks_completed(client, job_id, LOSS_WAIT)
    assert all(t.execution_info.exit_code == 0 for t in finished)
    assert {kiln.host_of(t.node_info.node_id) for t in finished} == set(WORKER_HOSTS)
    for task in finished:
        assert read_task_file(client, job_id, task.id, "stdout.txt") == f"out-{task.id}\n"
    appended = []
    for node in client.list_nodes(pool_id):
        served = read_node_file(client, pool_id, node.id, log)
        assert served == (kiln.cluster.hosts[kiln.host_of(node.id)].root_dir / node.id / log).read_text()
        assert served.startswith(f"{node.id} tasks:\n")
        appended += served.split()[2:]
        ranged = b"".join(client.download_node_file(pool_id, node.id, log, ocp_range="bytes=0-3"))
        assert ranged.decode() == served[:4]
        assert log in [f.name for f in client.list_node_files(pool_id, node.id, recursive=True)]
    twice = {task: task_story(kiln.server, job_id, task) for task in appended if appended.count(task) > 1}
    assert sorted(appended) == sorted(f"t{i}" for i in range(8)), f"ran more than once: {twice}"
    terminate_job(client, job_id)

    def released() -> list | None:
        statuses = list(client.list_job_preparation_and_release_task_status(job_id))
        done = [s.job_release_task_execution_info for s in statuses if s.job_release_task_execution_info]
        return statuses if len([r for r in done if r.state == "completed"]) == 2 else None

    for status in wait_for(released, 60, "release on both nodes"):
        prep = status.job_preparation_task_execution_info
        assert prep.exit_code == 0 and prep.retry_count == 0
        assert status.job_release_task_execution_info.exit_code == 0
        name = kiln.host_of(status.node_id)
        # the release ran on the node's own host: it saw that host's address
        seen = (kiln.cluster.hosts[name].root_dir / status.node_id / f"{log}.released").read_text()
        assert f" {kiln.netns.host(name).address}/24 " in seen
    server_nodes = kiln.server.data_dir / "nodes"
    assert not server_nodes.exists() or not any(server_nodes.iterdir())


def test_network_cut_mid_job(kiln: KilnOnHosts, pool_id: str, marks_dir: Path) -> None:
    """A host's link cut mid-job: the host stops its task (its lease runs out), then its node goes unknown and the
    task runs again on the other host, never both at once; the job completes; the link back, the host's node
    rejoins."""
    client, job_id = make_client(kiln.server), unique("cut")
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id)))
    client.create_tasks(job_id, [blocked(f"t{i}", marks_dir) for i in range(2)])
    wait_for(lambda: len(started(marks_dir)) == 2, 60, "two tasks started")
    hosts = {t.id: kiln.host_of(t.node_info.node_id) for t in client.list_tasks(job_id)}
    [cut] = [task for task, host in hosts.items() if host == "host-2"]
    [first_run] = started(marks_dir)[cut]
    kiln.netns.cut(kiln.netns.host("host-2"))
    try:
        wait_for(lambda: len(started(marks_dir)[cut]) == 2, LOSS_WAIT, "the cut host's task started elsewhere")
        assert not alive(first_run), f"{cut} runs on both hosts at once"
        assert node_states(kiln, client, pool_id)["host-2"] == "unknown"
    finally:
        kiln.netns.restore(kiln.netns.host("host-2"))
    (marks_dir / "go").touch()
    tasks = {t.id: t for t in wait_tasks_completed(client, job_id, LOSS_WAIT)}
    assert all(t.execution_info.exit_code == 0 for t in tasks.values())
    assert kiln.host_of(tasks[cut].node_info.node_id) == "host-3"
    assert [tasks[task].execution_info.requeue_count for task in sorted(tasks)] == [
        int(task == cut) for task in sorted(tasks)
    ]
    back(kiln, pool_id, "host-2")


def test_host_killed_and_restarted(kiln: KilnOnHosts, pool_id: str, marks_dir: Path) -> None:
    """Every process of a host killed at once (its worker, agent, launchers and tasks): its node goes unknown, its
    tasks run again on the other host; the host started again gets its node back, idle."""
    client, job_id, hosts = start_blocked_job(kiln, pool_id, marks_dir)
    lost = [task for task, host in hosts.items() if host == "host-3"]
    first_runs = [pid for task in lost for pid in started(marks_dir)[task]]
    kiln.netns.kill(kiln.netns.host("host-3"))
    assert not any(alive(pid) for pid in first_runs)
    wait_for(lambda: node_states(kiln, client, pool_id)["host-3"] == "unknown", LOSS_WAIT, "host-3 unknown")
    (marks_dir / "go").touch()
    tasks = wait_tasks_completed(client, job_id, LOSS_WAIT)
    for task in tasks:
        assert task.execution_info.exit_code == 0
        assert kiln.host_of(task.node_info.node_id) == "host-2"
        assert task.execution_info.requeue_count == (1 if task.id in lost else 0)
    back(kiln, pool_id, "host-3")


def test_server_restart(kiln: KilnOnHosts, pool_id: str, marks_dir: Path) -> None:
    """`kiln serve` in host 1 crashes mid-job and starts again on the same PostgreSQL: it claims the hosts again,
    the runs it lost are stopped on them and run again, and every task completes."""
    client, job_id, _ = start_blocked_job(kiln, pool_id, marks_dir)
    first_runs = [pid for pids in started(marks_dir).values() for pid in pids]
    kiln.restart_server(crash=True)
    client = make_client(kiln.server)
    wait_for(lambda: all(len(pids) == 2 for pids in started(marks_dir).values()), LOSS_WAIT, "the tasks ran again")
    assert not any(alive(pid) for pid in first_runs)
    (marks_dir / "go").touch()
    tasks = wait_tasks_completed(client, job_id, LOSS_WAIT)
    assert all(t.execution_info.exit_code == 0 and t.execution_info.requeue_count == 1 for t in tasks)
    assert {kiln.host_of(t.node_info.node_id) for t in tasks} == set(WORKER_HOSTS)
    both_idle(kiln, pool_id)


def test_a_multi_instance_task_across_hosts_gets_their_real_addresses(kiln: KilnOnHosts) -> None:
    """AZ_BATCH_HOST_LIST and AZ_BATCH_MASTER_NODE name the hosts' addresses, which the instances can reach each
    other at (on one machine each node has a loopback address of its own instead)."""
    client = make_client(kiln.server)
    pool_id = create_pool_and_wait(client, nodes=2, slots=1, enable_inter_node_communication=True)
    try:
        nodes = {node.id: kiln.host_of(node.id) for node in client.list_nodes(pool_id)}
        assert sorted(nodes.values()) == sorted(WORKER_HOSTS)  # one node on each worker host
        job_id = unique("mpi")
        client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id)))
        client.create_task(
            job_id,
            models.BatchTaskCreateOptions(
                id="mpi",
                command_line=shell("echo $AZ_BATCH_HOST_LIST; echo $AZ_BATCH_MASTER_NODE"),
                multi_instance_settings=models.MultiInstanceSettings(
                    number_of_instances=2, coordination_command_line="/bin/true"
                ),
            ),
        )
        task = wait_tasks_completed(client, job_id)[0]
        assert task.execution_info.exit_code == 0
        host_list, master = read_task_file(client, job_id, "mpi", "stdout.txt").split()
        addresses = {kiln.netns.host(name).address for name in WORKER_HOSTS}
        assert set(host_list.split(",")) == addresses
        primary = kiln.netns.host(nodes[task.node_info.node_id]).address
        assert master == f"{primary}:6000" and host_list.split(",")[0] == primary
        client.begin_delete_job(job_id, polling_interval=1).result()
    finally:
        client.begin_delete_pool(pool_id, polling_interval=1).result()
