"""`kiln serve --dask-scheduler` on an existing Dask cluster: a `dask scheduler` and two `kiln worker` hosts, real
processes with their own node-root directories, over TLS; driven by the official SDK."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from azure.batch import BatchClient, models
from typer.testing import CliRunner

from kiln.cli.embedded import EmbeddedServer
from kiln.cli.main import app as kiln_cli
from kiln.scheduler.slots import AHEAD_DEPTH_QUICK
from kiln.testing import (
    create_pool_and_wait,
    make_client,
    read_task_file,
    shell,
    task_story,
    terminate_job,
    unique,
    wait_for,
)
from kiln.testing_cluster import Cluster, HostSpec, start_cluster
from kiln.testing_fixtures import open_dir

HOSTS = ("host-a", "host-b")


@dataclass
class Attached:
    cluster: Cluster
    server: EmbeddedServer
    client: BatchClient
    pool_id: str

    def restart_server(self, *, crash: bool) -> None:
        self.server.kill() if crash else self.server.stop()
        self.server = self.cluster.server(self.server.data_dir).start()
        self.client = make_client(self.server)

    def host_of(self, node_id: str) -> str:
        """The host whose node-root directory holds the node's root."""
        return next(name for name, host in self.cluster.hosts.items() if (host.root_dir / node_id).is_dir())


@pytest.fixture(scope="module")
def attached(open_base: Path) -> Iterator[Attached]:
    """The cluster, a server attached to it once both hosts have joined, and a pool of 2 nodes, one per host."""
    base = open_dir(open_base, "cluster-")
    with start_cluster(base / "cluster", HOSTS) as cluster:
        server = cluster.server(base / "kiln").start()
        attached = Attached(cluster, server, make_client(server), "")
        try:
            cluster.wait_attached(server, HOSTS)
            attached.pool_id = create_pool_and_wait(attached.client, nodes=2, slots=2, pool_id="cluster-pool")
            yield attached
        finally:
            attached.server.stop()  # the one running now (a test restarts it); fails if its state broke


def _nodes(attached: Attached) -> dict[str, str]:
    """State of each node, by the name of its host."""
    nodes = attached.client.list_nodes(attached.pool_id)
    return {attached.host_of(node.id): node.state for node in nodes}


def _blocked(task_id: str, marks: Path) -> models.BatchTaskCreateOptions:
    """A task that says it started, then runs until the test makes the mark `go`."""
    script = f"umask 0; echo $$ >> {marks}/started-{task_id}; while [ ! -e {marks}/go ]; do sleep 0.1; done; echo done"
    return models.BatchTaskCreateOptions(id=task_id, command_line=shell(script))


def _completed(client: BatchClient, job_id: str) -> list[models.BatchTask]:
    def done() -> list[models.BatchTask] | None:
        tasks = list(client.list_tasks(job_id))
        return tasks if tasks and all(t.state == "completed" for t in tasks) else None

    return wait_for(done, 120, f"{job_id}'s tasks completed")


def test_seed_scenario_across_hosts(attached):
    """Prep once per node, on its host; 8 tasks; release on each node; the files are read from both hosts."""
    client, job_id = attached.client, unique("seed")
    log = "$AZ_BATCH_NODE_SHARED_DIR/job_prep_and_release.txt"
    client.create_job(
        models.BatchJobCreateOptions(
            id=job_id,
            pool_info=models.BatchPoolInfo(pool_id=attached.pool_id),
            job_preparation_task=models.BatchJobPreparationTask(
                command_line=shell(f"echo $AZ_BATCH_NODE_ID tasks: > {log}")
            ),
            job_release_task=models.BatchJobReleaseTask(command_line=shell(f"echo released >> {log}.released")),
        )
    )
    client.create_tasks(
        job_id,
        [
            models.BatchTaskCreateOptions(
                id=f"t{i}", command_line=shell(f"echo t{i} >> {log}; echo out-t{i}; sleep 0.5")
            )
            for i in range(8)
        ],
    )
    tasks = _completed(client, job_id)
    assert all(t.execution_info.exit_code == 0 for t in tasks)
    by_host = {attached.host_of(t.node_info.node_id) for t in tasks}
    assert by_host == set(HOSTS)  # both hosts ran tasks
    for task in tasks:  # each read from the host its node is on
        assert read_task_file(client, job_id, task.id, "stdout.txt").strip() == f"out-{task.id}"
    terminate_job(client, job_id)
    statuses = wait_for(
        lambda: (
            (s := list(client.list_job_preparation_and_release_task_status(job_id)))
            and all(
                x.job_release_task_execution_info and x.job_release_task_execution_info.state == "completed" for x in s
            )
            and s
        ),
        60,
    )
    assert len(statuses) == 2
    for status in statuses:
        prep = status.job_preparation_task_execution_info
        assert prep.exit_code == 0 and prep.retry_count == 0  # once per node
        assert status.job_release_task_execution_info.exit_code == 0
        # the node's files live under its host's node-root directory, not on the server's disk
        shared = attached.cluster.hosts[attached.host_of(status.node_id)].root_dir / status.node_id / "shared"
        lines = (shared / "job_prep_and_release.txt").read_text().split()
        assert lines[:2] == [status.node_id, "tasks:"]
        assert (shared / "job_prep_and_release.txt.released").read_text().split() == ["released"]
    assert not (attached.server.data_dir / "nodes").exists() or not any((attached.server.data_dir / "nodes").iterdir())


def test_host_killed_mid_job_then_back(attached, marks_dir):
    """A host killed mid-job: its node is unknown, its tasks requeued onto the other host, the job completes;
    the host started again under its name gets its node back, idle."""
    client, job_id = attached.client, unique("lost")
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=attached.pool_id)))
    client.create_tasks(job_id, [_blocked(f"t{i}", marks_dir) for i in range(4)])
    wait_for(lambda: len([t for t in client.list_tasks(job_id) if t.state == "running"]) == 4, 60)
    running = list(client.list_tasks(job_id))
    wait_for(lambda: len(list(marks_dir.glob("started-*"))) == 4, 60)
    on_a = {t.id for t in running if attached.host_of(t.node_info.node_id) == "host-a"}
    assert len(on_a) == 2
    attached.cluster.kill_host("host-a")
    wait_for(lambda: _nodes(attached)["host-a"] == "unknown", 60, "host-a's node unknown")
    (marks_dir / "go").touch()
    tasks = _completed(client, job_id)
    assert all(t.execution_info.exit_code == 0 for t in tasks)
    for task in tasks:
        assert attached.host_of(task.node_info.node_id) == "host-b"
        assert task.execution_info.requeue_count == (1 if task.id in on_a else 0)
    attached.cluster.start_host("host-a")
    wait_for(lambda: _nodes(attached) == {"host-a": "idle", "host-b": "idle"}, 120, "host-a's node back idle")
    terminate_job(client, job_id)


def test_server_restart_reattaches(attached, marks_dir):
    """The server crashes mid-job and starts again: it claims the hosts (the old runs are killed there), its nodes
    start again on them and every task runs to completion, the interrupted ones requeued."""
    job_id = unique("restart")
    client = attached.client
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=attached.pool_id)))
    client.create_tasks(job_id, [_blocked(f"t{i}", marks_dir) for i in range(6)])
    wait_for(lambda: len(list(marks_dir.glob("started-*"))) == 4, 60)
    first_runs = [int(path.read_text()) for path in marks_dir.glob("started-*")]
    attached.restart_server(crash=True)
    client = attached.client
    wait_for(lambda: len([t for t in client.list_tasks(job_id) if t.state == "running"]) == 4, 60)
    assert not any(alive(pid) for pid in first_runs)  # the hosts stopped the crashed server's runs
    (marks_dir / "go").touch()
    tasks = _completed(client, job_id)
    assert all(t.execution_info.exit_code == 0 for t in tasks)
    assert sum(t.execution_info.requeue_count for t in tasks) >= 4  # the four that were running ran again
    assert {attached.host_of(t.node_info.node_id) for t in tasks} == set(HOSTS)
    wait_for(lambda: _nodes(attached) == {"host-a": "idle", "host-b": "idle"}, 60)
    terminate_job(client, job_id)


def test_a_task_sent_ahead_to_a_lost_host_counts_as_requeued_and_runs_once(attached, marks_dir):
    """Whether a task sent ahead started on a host that is gone cannot be read on the server's disk: it counts
    as a run (requeueCount 1), and it runs once, elsewhere or when the hosts are back.

    The server learns of each host's loss on its own, however close together they die (here, one after the other).
    Every node's room ahead is full before (more tasks are added than the deepest room holds; how deep it is
    depends on how long the node's latest task ran): a task requeued from the host lost first could otherwise be
    sent ahead to the other in between, and count that loss too (requeueCount 2, by the same rule; loaded runs
    failed so). The tasks left over never reach a node (requeueCount 0)."""
    client, job_id = attached.client, unique("ahead")
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=attached.pool_id)))
    client.create_tasks(job_id, [_blocked(f"t{i}", marks_dir) for i in range(4)])
    wait_for(lambda: len(list(marks_dir.glob("started-*"))) == 4, 60)
    room = AHEAD_DEPTH_QUICK * client.get_pool(attached.pool_id).task_slots_per_node  # the most a full node holds
    added = [f"ahead{i}" for i in range(room * len(HOSTS) + 1)]
    commands = {a: shell(f"umask 0; echo ran >> {marks_dir}/{a}") for a in added}
    client.create_tasks(job_id, [models.BatchTaskCreateOptions(id=a, command_line=c) for a, c in commands.items()])

    def sent_ahead() -> set[str] | None:  # one placement round sends them all: any seen means all are
        sent = {a for a in added if "sent ahead" in str(task_story(attached.server, job_id, a)["why"])}
        return sent or None

    ahead = wait_for(sent_ahead, 60, "every node's room ahead full")
    assert len(ahead) < len(added)
    for name in HOSTS:
        _lose(attached, name)
    (marks_dir / "go").touch()
    for name in HOSTS:
        attached.cluster.start_host(name)
    tasks = {t.id: t for t in _completed(client, job_id)}
    assert {a: (marks_dir / a).read_text() for a in added} == dict.fromkeys(added, "ran\n")
    ran = {t.id: (t.execution_info.requeue_count, t.execution_info.exit_code) for t in tasks.values()}
    expected = {t: (1 if t in ahead or t.startswith("t") else 0, 0) for t in tasks}
    assert ran == expected, [task_story(attached.server, job_id, t)["transitions"] for t in tasks]
    told = [  # a task sent ahead stays active when its host is lost: its story says why its count moved
        (r["from"], r["to"], r["detail"])
        for r in task_story(attached.server, job_id, sorted(ahead)[0])["transitions"]
        if r["kind"] == "task"
    ]
    assert ("active", "active", "requeue 1, reason sent ahead, may have started unseen") in told, told
    wait_for(lambda: _nodes(attached) == {"host-a": "idle", "host-b": "idle"}, 60, "both nodes back idle")
    terminate_job(client, job_id)


def _lose(attached: Attached, name: str) -> None:
    """Kill the host, and wait until the server has its node unknown."""
    attached.cluster.kill_host(name)
    wait_for(lambda: _nodes(attached)[name] == "unknown", 60, f"{name}'s node unknown")


def test_plain_dask_worker_with_kiln_node_preload(open_base):
    """`dask worker ADDRESS --preload kiln.node`, with its node-root directory from the environment, is a host."""
    base = open_dir(open_base, "plain-dask-")
    with start_cluster(base / "cluster", [HostSpec("plain", plain_dask=True)]) as cluster:
        with cluster.server(base / "kiln") as server:
            cluster.wait_attached(server, ["plain"])
            client = make_client(server)
            pool_id = create_pool_and_wait(client, nodes=1, slots=1, pool_id="plain-pool")
            job_id = unique("plain")
            client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id)))
            client.create_task(
                job_id, models.BatchTaskCreateOptions(id="t", command_line=shell("echo $AZ_BATCH_NODE_ROOT_DIR"))
            )
            wait_for(lambda: client.get_task(job_id, "t").state == "completed", 60)
            node_id = client.get_task(job_id, "t").node_info.node_id
            root = cluster.hosts["plain"].root_dir / node_id
            assert read_task_file(client, job_id, "t", "stdout.txt").strip() == str(root)


@pytest.mark.parametrize(
    "command",
    [
        ["serve", "--port", "0", "--data-dir", "kiln", "--dask-scheduler", "tcp://127.0.0.1:1"],
        ["worker", "tcp://127.0.0.1:1", "--node-root-dir", "roots"],
    ],
)
def test_plain_tcp_is_refused_without_insecure_dask(command, open_tmp):
    done = subprocess.run(
        [sys.executable, "-m", "kiln.cli.main", *command], cwd=open_tmp, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "--insecure-dask" in done.stderr and "run any code" in " ".join(done.stderr.split())


@pytest.mark.root("only root runs tasks as accounts of their own")
def test_kiln_worker_refuses_a_node_root_dir_task_accounts_cannot_reach(open_tmp):
    closed = open_tmp / "closed"
    closed.mkdir(mode=0o700)
    command = ["worker", "tcp://127.0.0.1:1", "--insecure-dask", "--node-root-dir", str(closed / "roots")]
    done = subprocess.run([sys.executable, "-m", "kiln.cli.main", *command], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"chmod o+x {closed}" in " ".join(done.stderr.split())


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_host_that_stops_answering_is_lost_and_rejoins(open_base, marks_dir):
    """A host frozen (SIGSTOP) while the scheduler still lists it: after twice the host lease without an answer
    its node is unknown and its task requeued onto the other host; thawed, the host has stopped the stale run
    (its lease ran out) and its node rejoins, idle."""
    base = open_dir(open_base, "frozen-")
    with start_cluster(base / "cluster", HOSTS, env={"KILN_HOST_LEASE": "5"}) as cluster:
        with cluster.server(base / "kiln") as server:
            cluster.wait_attached(server, HOSTS)
            attached = Attached(cluster, server, make_client(server), "")
            attached.pool_id = create_pool_and_wait(attached.client, nodes=2, slots=2, pool_id="frozen-pool")
            client, job_id = attached.client, unique("frozen")
            client.create_job(
                models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=attached.pool_id))
            )
            client.create_tasks(job_id, [_blocked(f"t{i}", marks_dir) for i in range(2)])
            wait_for(lambda: len(list(marks_dir.glob("started-*"))) == 2, 60)
            running = {t.id: t.node_info.node_id for t in client.list_tasks(job_id)}
            frozen_task = next(task for task, node in running.items() if attached.host_of(node) == "host-a")
            stale_pid = int((marks_dir / f"started-{frozen_task}").read_text())
            cluster.pause_host("host-a")
            try:
                wait_for(lambda: _nodes(attached)["host-a"] == "unknown", 60, "host-a's node unknown")
                wait_for(lambda: len((marks_dir / f"started-{frozen_task}").read_text().split()) == 2, 60, "rerun")
            finally:
                cluster.pause_host("host-a", paused=False)
            wait_for(lambda: not alive(stale_pid), 60, "the stale run to be killed on host-a")
            wait_for(lambda: _nodes(attached)["host-a"] == "idle", 60, "host-a's node back")
            (marks_dir / "go").touch()
            tasks = {t.id: t for t in _completed(client, job_id)}
            assert tasks[frozen_task].execution_info.requeue_count == 1
            assert attached.host_of(tasks[frozen_task].node_info.node_id) == "host-b"
            assert all(t.execution_info.exit_code == 0 for t in tasks.values())


def test_an_application_package_reaches_every_host_once(attached, tmp_path):
    """The package store is on the server's disk: each host gets the zip once and its nodes extract that copy."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("data.txt", "from the server")
    package = tmp_path / "tool.zip"
    package.write_bytes(buffer.getvalue())
    app_id, server = unique("tool"), attached.server
    auth = ["--endpoint", server.endpoint, "--account", server.account_name, "--key", server.account_key]
    added = CliRunner().invoke(kiln_cli, ["app", "add", app_id, "1", str(package), *auth])
    assert added.exit_code == 0, added.output
    client, job_id = attached.client, unique("packages")
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=attached.pool_id)))
    reference = models.BatchApplicationPackageReference(application_id=app_id, version="1")
    script = f'cat "$AZ_BATCH_APP_PACKAGE_{app_id.replace("-", "_")}_1/data.txt"'
    client.create_tasks(
        job_id,
        [
            models.BatchTaskCreateOptions(
                id=f"t{i}", command_line=shell(script), application_package_references=[reference]
            )
            for i in range(6)
        ],
    )
    done = _completed(client, job_id)
    outputs = {t.id: read_task_file(client, job_id, t.id, "stdout.txt") for t in done}
    assert set(outputs.values()) == {"from the server"}, [
        (t.id, t.node_info.node_id, t.execution_info.exit_code, read_task_file(client, job_id, t.id, "stderr.txt"))
        for t in done
    ]
    assert {attached.host_of(t.node_info.node_id) for t in done} == set(HOSTS)  # both hosts ran them
    for host in attached.cluster.hosts.values():
        copies = list((host.root_dir / ".kiln-packages").glob(f"{app_id.lower()}*"))
        assert len(copies) == 1 and copies[0].read_bytes() == package.read_bytes()
