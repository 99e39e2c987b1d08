"""Multi-instance tasks (batch-semantics §6.2, §6.5; Azure's batch-mpi article): all instances on distinct
nodes at once, common resource files and the coordination command on every instance, then the application
command on the primary; the primary's exit ends the task; subtasks are listed by `list_subtasks`."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest
from azure.batch import models
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from kiln.cli.embedded import EmbeddedServer
from kiln.testing import (
    create_pool_and_wait,
    make_client,
    restart_node,
    shell,
    unique,
    wait_for,
    wait_tasks_completed,
)

ENV_NAMES = (
    "AZ_BATCH_NODE_ID",
    "AZ_BATCH_HOST_LIST",
    "AZ_BATCH_NODE_LIST",
    "AZ_BATCH_MASTER_NODE",
    "AZ_BATCH_IS_CURRENT_NODE_MASTER",
    "AZ_BATCH_TASK_SHARED_DIR",
    "AZ_BATCH_TASK_DIR",
    "CCP_NODES",
)


@pytest.fixture(scope="module")
def mi_pool(client) -> Iterator[str]:
    """Three nodes of one slot with inter-node communication, as Azure requires for multi-instance tasks."""
    pool_id = create_pool_and_wait(
        client, nodes=3, slots=1, pool_id=unique("mi-pool"), enable_inter_node_communication=True
    )
    yield pool_id
    client.begin_delete_pool(pool_id, polling_interval=0.5).result()


class _Files(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"common payload\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def file_url() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    thread = threading.Thread(target=httpd.serve_forever, name="common-files", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/common.txt"
    httpd.shutdown()
    httpd.server_close()
    thread.join(10)


def _job(client, pool_id: str) -> str:
    job_id = unique("mi")
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id)))
    return job_id


def _add_on_three_nodes(client, job_id: str, task_id: str, command_line: str) -> None:
    """A task whose instances take the pool's three nodes, with a coordination command that does nothing."""
    client.create_task(
        job_id,
        models.BatchTaskCreateOptions(
            id=task_id,
            command_line=command_line,
            multi_instance_settings=models.MultiInstanceSettings(
                number_of_instances=3, coordination_command_line="/bin/true"
            ),
        ),
    )


def _env_dump(path: str) -> str:
    """Shell that writes the multi-instance variables to `path` as NAME=value lines."""
    return "; ".join(f'echo "{n}=${n}" >> {path}' for n in ENV_NAMES)


def _read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------------------------------- behaviour
def test_instances_coordinate_on_distinct_nodes_then_the_primary_runs(client, mi_pool, marks_dir, file_url):
    """Every instance sees the multi-instance variables and the common file in AZ_BATCH_TASK_SHARED_DIR; the
    coordination command ran on every instance before the application command, its background service
    kept running for the application and ended with the task."""
    job_id = _job(client, mi_pool)
    coordination = shell(
        f"m={marks_dir}/coord-$AZ_BATCH_NODE_ID; {_env_dump('$m.env')}; "
        'cp "$AZ_BATCH_TASK_SHARED_DIR/common.txt" "$m.common"; '
        'sleep 300 & echo $! > "$m.service"; touch "$m.done"'
    )
    application = shell(
        f'ls {marks_dir} | grep -c "\\.done$" > {marks_dir}/app.coordinated; '
        f"for f in {marks_dir}/*.service; do [ -d /proc/$(cat $f) ] && echo alive; done > {marks_dir}/app.services; "
        f"{_env_dump(f'{marks_dir}/app.env')}"
    )
    client.create_task(
        job_id,
        models.BatchTaskCreateOptions(
            id="mpi",
            command_line=application,
            multi_instance_settings=models.MultiInstanceSettings(
                number_of_instances=3,
                coordination_command_line=coordination,
                common_resource_files=[models.ResourceFile(http_url=file_url, file_path="common.txt")],
            ),
        ),
    )
    wait_tasks_completed(client, job_id)

    task = client.get_task(job_id, "mpi")
    assert task.execution_info.result == "success" and task.execution_info.exit_code == 0
    assert task.multi_instance_settings.number_of_instances == 3
    primary = task.node_info.node_id
    nodes = {n.id for n in client.list_nodes(mi_pool)}
    addresses = {n.id: n.ip_address for n in client.list_nodes(mi_pool)}

    coords = {p.name[len("coord-") : -len(".env")]: _read_env(p) for p in marks_dir.glob("coord-*.env")}
    assert set(coords) == nodes  # one instance on each node
    hosts = coords[primary]["AZ_BATCH_HOST_LIST"].split(",")
    assert len(hosts) == 3 and set(hosts) == set(addresses.values())  # the nodes' ipAddress, one per node
    assert hosts[0] == addresses[primary]
    for node_id, env in coords.items():
        assert env["AZ_BATCH_NODE_ID"] == node_id
        assert env["AZ_BATCH_HOST_LIST"] == ",".join(hosts)
        assert env["AZ_BATCH_NODE_LIST"] == ";".join(hosts)
        assert env["AZ_BATCH_MASTER_NODE"] == f"{hosts[0]}:6000"
        assert env["AZ_BATCH_IS_CURRENT_NODE_MASTER"] == ("true" if node_id == primary else "false")
        assert env["AZ_BATCH_TASK_SHARED_DIR"] == env["AZ_BATCH_TASK_DIR"]
        assert env["AZ_BATCH_TASK_SHARED_DIR"].endswith(f"workitems/{job_id}/job-1/mpi")
        assert env["CCP_NODES"] == "3 " + " ".join(f"{h} 1" for h in hosts)
        assert (marks_dir / f"coord-{node_id}.common").read_text() == "common payload\n"

    app = _read_env(marks_dir / "app.env")
    assert app["AZ_BATCH_NODE_ID"] == primary and app["AZ_BATCH_IS_CURRENT_NODE_MASTER"] == "true"
    assert app["AZ_BATCH_HOST_LIST"] == ",".join(hosts)
    assert (marks_dir / "app.coordinated").read_text().strip() == "3"  # all coordination commands had ended
    assert (marks_dir / "app.services").read_text().split() == ["alive"] * 3

    services = [int(p.read_text()) for p in marks_dir.glob("*.service")]
    wait_for(lambda: not any(_alive(pid) for pid in services), 30, "coordination services ended with the task")

    subtasks = sorted(client.list_subtasks(job_id, "mpi"), key=lambda s: s.id)
    assert [s.id for s in subtasks] == [1, 2]
    assert {s.node_info.node_id for s in subtasks} == nodes - {primary}
    for sub in subtasks:
        assert sub.state == "completed" and sub.previous_state == "running"
        assert sub.exit_code == 0 and sub.result == "success"
        assert sub.start_time is not None and sub.end_time is not None
        assert sub.node_info.pool_id == mi_pool
        assert sub.node_info.task_root_directory == f"workitems/{job_id}/job-1/mpi"

    selected = list(client.list_subtasks(job_id, "mpi", select=["id", "state"]))
    assert sorted(s.id for s in selected) == [1, 2]
    assert all(s.state == "completed" and s.exit_code is None and s.node_info is None for s in selected)

    counts = client.get_job_task_counts(job_id).task_counts
    assert (counts.completed, counts.succeeded, counts.running, counts.active) == (1, 1, 0, 0)


def test_task_exit_code_is_the_primarys(client, mi_pool):
    job_id = _job(client, mi_pool)
    client.create_task(
        job_id,
        models.BatchTaskCreateOptions(
            id="exit7",
            command_line=shell("exit 7"),
            multi_instance_settings=models.MultiInstanceSettings(
                number_of_instances=2, coordination_command_line="/bin/true"
            ),
        ),
    )
    wait_tasks_completed(client, job_id)
    task = client.get_task(job_id, "exit7")
    assert task.execution_info.exit_code == 7 and task.execution_info.result == "failure"
    assert task.execution_info.failure_info.code == "FailureExitCode"
    [sub] = client.list_subtasks(job_id, "exit7")
    assert sub.id == 1 and sub.exit_code == 0 and sub.state == "completed"


def test_a_failed_coordination_command_fails_the_task(client, mi_pool, marks_dir):
    """Any instance failing fails the whole task; the application command never runs."""
    job_id = _job(client, mi_pool)
    client.create_task(
        job_id,
        models.BatchTaskCreateOptions(
            id="bad",
            command_line=shell(f"touch {marks_dir}/app-ran"),
            multi_instance_settings=models.MultiInstanceSettings(
                number_of_instances=3,
                coordination_command_line=shell('[ "$AZ_BATCH_IS_CURRENT_NODE_MASTER" = true ] || exit 5'),
            ),
        ),
    )
    wait_tasks_completed(client, job_id)
    task = client.get_task(job_id, "bad")
    assert task.execution_info.exit_code == 5 and task.execution_info.result == "failure"
    assert not (marks_dir / "app-ran").exists()
    subtasks = list(client.list_subtasks(job_id, "bad"))
    assert len(subtasks) == 2 and all(s.state == "completed" for s in subtasks)
    assert any(s.exit_code == 5 and s.result == "failure" for s in subtasks)


def test_task_waits_active_on_pools_that_cannot_run_it(client, mi_pool, pool):
    """Azure never schedules a multi-instance task on a pool without inter-node communication (or with more
    than one slot per node); the task stays active. Nor does it run while the pool has fewer nodes than
    instances. Ordinary tasks behind it run."""
    assert client.get_pool(mi_pool).enable_inter_node_communication is True
    assert client.get_pool(pool).enable_inter_node_communication is False
    for pool_id, instances in ((pool, 2), (mi_pool, 4)):
        job_id = _job(client, pool_id)
        client.create_task(
            job_id,
            models.BatchTaskCreateOptions(
                id="mi",
                command_line="/bin/true",
                multi_instance_settings=models.MultiInstanceSettings(
                    number_of_instances=instances, coordination_command_line="/bin/true"
                ),
            ),
        )
        client.create_task(job_id, models.BatchTaskCreateOptions(id="plain", command_line="/bin/true"))
        wait_for(lambda j=job_id: client.get_task(j, "plain").state == "completed", 60, "the ordinary task")
        assert client.get_task(job_id, "mi").state == "active"
        assert list(client.list_subtasks(job_id, "mi")) == []
        client.begin_delete_job(job_id, polling_interval=0.5).result()


def test_a_multi_instance_task_can_be_terminated_and_frees_its_nodes(client, mi_pool):
    job_id = _job(client, mi_pool)
    _add_on_three_nodes(client, job_id, "long", "sleep 300")
    wait_for(
        lambda: len([n for n in client.list_nodes(mi_pool) if n.state == "running"]) == 3,
        60,
        "three nodes running the task",
    )
    client.terminate_task(job_id, "long")
    task = client.get_task(job_id, "long")
    assert task.state == "completed" and task.execution_info.failure_info.code == "TaskEnded"
    wait_for(lambda: all(n.state == "idle" for n in client.list_nodes(mi_pool)), 60, "nodes idle again")
    _add_on_three_nodes(client, job_id, "next", "/bin/true")
    wait_for(lambda: client.get_task(job_id, "next").state == "completed", 60, "the next task on all nodes")

    def gone(node_id: str) -> bool:  # a deleted task's directory goes from every instance's node
        try:
            client.get_node_file_properties(mi_pool, node_id, f"workitems/{job_id}/job-1/next/stdout.txt")
        except ResourceNotFoundError:
            return True
        return False

    nodes = [n.id for n in client.list_nodes(mi_pool)]
    assert not any(gone(n) for n in nodes)
    client.delete_task(job_id, "next")
    wait_for(lambda: all(gone(n) for n in nodes), 30, "the task's directories removed")


def test_disabling_the_job_with_requeue_frees_every_instance_node(client, mi_pool):
    """The whole task goes back to the queue: every instance's slot is given back, so it runs again on
    the same three nodes once the job is enabled (subtask slots once stayed taken, and it waited for ever)."""
    job_id = _job(client, mi_pool)
    _add_on_three_nodes(client, job_id, "long", "sleep 300")
    wait_for(lambda: client.get_task(job_id, "long").state == "running", 60, "the task running")
    client.begin_disable_job(
        job_id, models.BatchJobDisableOptions(disable_tasks="requeue"), polling_interval=0.5
    ).result()
    assert client.get_task(job_id, "long").state == "active"
    wait_for(
        lambda: all(n.state == "idle" and n.running_task_slots_count == 0 for n in client.list_nodes(mi_pool)),
        60,
        "every instance node idle",
    )
    client.begin_enable_job(job_id, polling_interval=0.5).result()
    wait_for(lambda: client.get_task(job_id, "long").state == "running", 60, "the task running again")
    client.terminate_task(job_id, "long")
    wait_for(lambda: all(n.state == "idle" for n in client.list_nodes(mi_pool)), 60, "nodes idle again")


@pytest.mark.parametrize(
    "settings, slots, name",
    [
        ({"number_of_instances": 0, "coordination_command_line": "/bin/true"}, None, "numberOfInstances"),
        ({"number_of_instances": 2, "coordination_command_line": "/bin/true"}, 2, "requiredSlots"),
    ],
)
def test_bad_multi_instance_settings_are_rejected(client, mi_pool, settings, slots, name):
    job_id = _job(client, mi_pool)
    with pytest.raises(HttpResponseError) as caught:
        client.create_task(
            job_id,
            models.BatchTaskCreateOptions(
                id="bad",
                command_line="/bin/true",
                required_slots=slots,
                multi_instance_settings=models.MultiInstanceSettings(**settings),
            ),
        )
    assert caught.value.response.status_code == 400
    body = caught.value.response.json()
    assert body["code"] == "InvalidPropertyValue"
    assert any(v["value"].endswith(name) for v in body["values"] if v["key"] == "PropertyName")
    assert list(client.list_tasks(job_id)) == []


def test_instances_wait_for_the_job_preparation_task_on_their_nodes(client, mi_pool, marks_dir):
    """With a preparation task (waitForSuccess), it runs on every instance's node before any coordination."""
    job_id = unique("mi-prep")
    client.create_job(
        models.BatchJobCreateOptions(
            id=job_id,
            pool_info=models.BatchPoolInfo(pool_id=mi_pool),
            job_preparation_task=models.BatchJobPreparationTask(
                command_line=shell(f"sleep 0.5; touch {marks_dir}/prep-$AZ_BATCH_NODE_ID")
            ),
        )
    )
    client.create_task(
        job_id,
        models.BatchTaskCreateOptions(
            id="mpi",
            command_line="/bin/true",
            multi_instance_settings=models.MultiInstanceSettings(
                number_of_instances=3,
                coordination_command_line=shell(
                    f"[ -e {marks_dir}/prep-$AZ_BATCH_NODE_ID ] && touch {marks_dir}/coord-$AZ_BATCH_NODE_ID"
                ),
            ),
        ),
    )
    wait_tasks_completed(client, job_id)
    assert client.get_task(job_id, "mpi").execution_info.result == "success"
    nodes = {n.id for n in client.list_nodes(mi_pool)}
    assert {p.name[len("coord-") :] for p in marks_dir.glob("coord-*")} == nodes
    status = list(client.list_job_preparation_and_release_task_status(job_id))
    assert {s.node_id for s in status} == nodes
    assert all(s.job_preparation_task_execution_info.result == "success" for s in status)


def test_a_lost_subtask_node_requeues_the_whole_task(client, mi_pool, marks_dir):
    """SIGKILL the worker of a subtask's node: the task goes back to the queue as a whole and runs again."""
    job_id = _job(client, mi_pool)
    first = marks_dir / "first-run"
    client.create_task(
        job_id,
        models.BatchTaskCreateOptions(
            id="mpi",
            command_line=shell(f"if [ -e {first} ]; then exit 0; fi; touch {first}; sleep 300"),
            multi_instance_settings=models.MultiInstanceSettings(
                number_of_instances=3,
                coordination_command_line=shell(
                    f'[ "$AZ_BATCH_IS_CURRENT_NODE_MASTER" = true ] || echo $PPID > {marks_dir}/launcher-$AZ_BATCH_NODE_ID'  # noqa: E501
                ),
            ),
        ),
    )
    wait_for(lambda: first.exists(), 60, "the application command to start")
    victim = next(marks_dir.glob("launcher-*"))
    os.kill(psutil.Process(int(victim.read_text())).ppid(), signal.SIGKILL)  # the launcher's parent: the worker
    task = wait_tasks_completed(client, job_id, timeout=120)[0]
    assert task.execution_info.result == "success"
    assert task.execution_info.requeue_count == 1
    subtasks = list(client.list_subtasks(job_id, "mpi"))
    assert len(subtasks) == 2 and all(s.state == "completed" and s.exit_code == 0 for s in subtasks)


def test_a_server_restart_requeues_a_running_multi_instance_task(open_tmp, marks_dir):
    data = open_tmp / "data"
    server = EmbeddedServer(data).start()
    try:
        client = make_client(server)
        pool_id = create_pool_and_wait(client, nodes=2, pool_id="mi-restart", enable_inter_node_communication=True)
        client.create_job(models.BatchJobCreateOptions(id="j", pool_info=models.BatchPoolInfo(pool_id=pool_id)))
        go = marks_dir / "go"
        client.create_task(
            "j",
            models.BatchTaskCreateOptions(
                id="mpi",
                command_line=shell(f"echo run >> {marks_dir}/runs; while [ ! -e {go} ]; do sleep 0.1; done"),
                multi_instance_settings=models.MultiInstanceSettings(
                    number_of_instances=2, coordination_command_line="/bin/true"
                ),
            ),
        )
        wait_for(lambda: (marks_dir / "runs").exists(), 60, "the application command to start")
        assert len(list(client.list_subtasks("j", "mpi"))) == 1
        assert server.stop() == 0
        server = EmbeddedServer(data, port=server.port).start()
        client = make_client(server)
        wait_for(lambda: (marks_dir / "runs").read_text().count("run") == 2, 90, "the requeued task to run again")
        task = client.get_task("j", "mpi")
        assert task.state == "running" and task.execution_info.requeue_count == 1
        go.touch()
        task = wait_tasks_completed(client, "j")[0]
        assert task.execution_info.result == "success"
        [sub] = client.list_subtasks("j", "mpi")
        assert sub.state == "completed" and sub.exit_code == 0 and sub.node_info.node_id != task.node_info.node_id
    finally:
        server.stop()


def test_rebooting_a_subtask_node_with_terminate_ends_the_task(client, mi_pool):
    job_id = _job(client, mi_pool)
    client.create_task(
        job_id,
        models.BatchTaskCreateOptions(
            id="long",
            command_line="sleep 300",
            multi_instance_settings=models.MultiInstanceSettings(
                number_of_instances=2, coordination_command_line="/bin/true"
            ),
        ),
    )
    wait_for(
        lambda: (
            client.get_task(job_id, "long").state == "running" and len(list(client.list_subtasks(job_id, "long"))) == 1
        ),
        60,
        "the task running",
    )
    [sub] = client.list_subtasks(job_id, "long")
    restart_node(client, mi_pool, sub.node_info.node_id, option="terminate").result()
    task = wait_tasks_completed(client, job_id)[0]
    assert task.execution_info.failure_info.code == "TaskEnded"
    [sub] = client.list_subtasks(job_id, "long")
    assert sub.state == "completed" and sub.end_time is not None  # its result is its coordination command's
    wait_for(lambda: all(n.state == "idle" for n in client.list_nodes(mi_pool)), 90, "nodes idle again")


def test_directories_on_every_instance_node_go_after_the_retention_time(client, mi_pool):
    job_id = _job(client, mi_pool)
    client.create_task(
        job_id,
        models.BatchTaskCreateOptions(
            id="short",
            command_line="/bin/true",
            constraints=models.BatchTaskConstraints(retention_time="PT2S"),
            multi_instance_settings=models.MultiInstanceSettings(
                number_of_instances=3, coordination_command_line="/bin/true"
            ),
        ),
    )
    task = wait_tasks_completed(client, job_id)[0]
    nodes = [task.node_info.node_id, *(s.node_info.node_id for s in client.list_subtasks(job_id, "short"))]
    assert len(set(nodes)) == 3

    def kept(node_id: str) -> bool:
        try:
            client.get_node_file_properties(mi_pool, node_id, f"workitems/{job_id}/job-1/short/stdout.txt")
        except ResourceNotFoundError:
            return False
        return True

    wait_for(lambda: not any(kept(n) for n in nodes), 30, "the task's directories removed on every node")
