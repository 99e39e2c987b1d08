"""Faults on demand (`kiln fault …` over /kiln/…/faults/…): the Batch application, through the SDK, sees
what it would see on Azure, and each fault shows in the story of the tasks it hit."""

from __future__ import annotations

import http.server
import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import pytest
from azure.batch import BatchClient, models
from typer.testing import CliRunner, Result

from kiln.cli.exit_codes import ExitCode
from kiln.cli.main import app
from kiln.testing import (
    create_pool_and_wait,
    read_task_file,
    restart_node,
    shell,
    unique,
    wait_for,
    wait_tasks_completed,
)

runner = CliRunner()


@pytest.fixture
def kiln(server):
    env = {"KILN_ENDPOINT": server.endpoint, "KILN_ACCOUNT_NAME": server.account_name}
    env["KILN_ACCOUNT_KEY"] = server.account_key

    def run(*args: str, expect: int = ExitCode.OK) -> Result:
        result = runner.invoke(app, list(args), env=env)
        assert result.exit_code == expect, (args, result.exit_code, result.output, result.exception)
        return result

    return run


def _story(kiln, job_id: str, task_id: str) -> list[dict]:
    return json.loads(kiln("task", "story", job_id, task_id, "--json").stdout)["transitions"]


def _job(client: BatchClient, cleanup, pool_id: str, **fields) -> str:
    job_id = unique("fault")
    client.create_job(
        models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id), **fields)
    )
    cleanup(job=job_id)
    return job_id


def _first_run_hangs(once: Path) -> str:
    """A command whose first run marks `once` and hangs; a second run succeeds."""
    return shell(f"if [ -e {once} ]; then exit 0; fi; touch {once}; exec sleep 300")


def _started(client: BatchClient, job_id: str, once: Path) -> None:
    wait_for(lambda: once.exists() and client.get_task(job_id, "t").state == "running", what="first run started")


def test_kill_task_ends_it_with_137_and_its_retry_runs(kiln, client, pool, cleanup, marks_dir):
    job_id = _job(client, cleanup, pool)
    once = marks_dir / f"{job_id}-once"
    client.create_task(
        job_id,
        models.BatchTaskCreateOptions(
            id="t",
            command_line=_first_run_hangs(once),
            constraints=models.BatchTaskConstraints(max_task_retry_count=1),
        ),
    )
    _started(client, job_id, once)
    assert "process(es) killed" in kiln("fault", "kill-task", job_id, "t").stdout
    [task] = wait_tasks_completed(client, job_id)
    assert (task.execution_info.exit_code, task.execution_info.retry_count) == (0, 1)

    story = _story(kiln, job_id, "t")
    fault = next(r for r in story if r["kind"] == "fault")
    assert fault["to"] == "kill-task" and f"/kiln/jobs/{job_id}/tasks/t/faults/kill" in fault["stimulus"]
    after = story[story.index(fault) + 1 :]
    assert any(r["from"] == "running" and r["to"] == "active" and "exit code 137" in r["detail"] for r in after)
    kiln("fault", "kill-task", job_id, "t", expect=ExitCode.CONFLICT)  # completed: nothing runs


def test_lose_node_requeues_its_task_and_the_next_prep_fails_as_asked(kiln, client, cleanup, marks_dir):
    pool_id = create_pool_and_wait(client, nodes=1)
    cleanup(pool=pool_id)
    [node] = [n.id for n in client.list_nodes(pool_id)]
    job_id = _job(client, cleanup, pool_id)
    once = marks_dir / f"{job_id}-once"
    client.create_task(job_id, models.BatchTaskCreateOptions(id="t", command_line=_first_run_hangs(once)))
    _started(client, job_id, once)

    assert "1 task(s) on it" in kiln("fault", "lose-node", pool_id, node).stdout
    [task] = wait_tasks_completed(client, job_id)
    assert (task.execution_info.exit_code, task.execution_info.requeue_count) == (0, 1)
    story = _story(kiln, job_id, "t")
    fault = next(r for r in story if r["kind"] == "fault")
    assert (fault["to"], fault["nodeId"]) == ("lose-node", node)
    assert any(r["from"] == "running" and r["to"] == "active" for r in story[story.index(fault) + 1 :])
    wait_for(lambda: client.get_node(pool_id, node).state == "idle", what="the lost node back")

    kiln("fault", "fail-next-prep", pool_id, node, "--exit-code", "7")
    prep = models.BatchJobPreparationTask(command_line="/bin/true")
    prepped = _job(client, cleanup, pool_id, job_preparation_task=prep)
    client.create_task(prepped, models.BatchTaskCreateOptions(id="t", command_line="/bin/true"))

    def prep_ended() -> models.BatchJobPreparationTaskExecutionInfo | None:
        status = list(client.list_job_preparation_and_release_task_status(prepped))
        info = status[0].job_preparation_task_execution_info if status else None
        return info if info is not None and info.state == "completed" else None

    info = wait_for(prep_ended, what="the preparation task ended")
    assert (info.exit_code, info.result, info.failure_info.code) == (7, "failure", "FailureExitCode")
    assert client.get_task(prepped, "t").state == "active"  # its only node failed the prep: it waits, as on Azure
    fault = next(r for r in _story(kiln, prepped, "t") if r["kind"] == "fault")
    assert (fault["to"], fault["nodeId"], fault["detail"]) == ("fail-next-prep", node, "exit code 7")


def test_fault_errors(kiln, client, pool):
    kiln("fault", "lose-node", pool, "tvmps_none", expect=ExitCode.NOT_FOUND)
    refused = kiln("fault", "fail-next-prep", pool, "tvmps_none", "--exit-code", "0", expect=ExitCode.FAILED)
    assert "exitCode" in refused.stderr
    kiln("fault", "kill-task", unique("none"), "t", expect=ExitCode.NOT_FOUND)
    kiln("fault", "fail-next-start-task", pool, "tvmps_none", "--exit-code", "3", expect=ExitCode.NOT_FOUND)
    kiln("fault", "fail-next-download", "--job", unique("none"), expect=ExitCode.NOT_FOUND)
    kiln("fault", "fail-next-download", "--job", "j", "--pool", pool, expect=ExitCode.USAGE)
    refused = kiln("fault", "fail-next-download", "--job", "j", "--status", "200", expect=ExitCode.FAILED)
    assert "httpStatus" in refused.stderr
    node = next(iter(client.list_nodes(pool))).id
    both = ("--delay", "1", "--steps", "2", "--for", "5")
    assert "durationSeconds" in kiln("fault", "slow-dispatch", pool, node, *both, expect=ExitCode.FAILED).stderr
    assert "delaySeconds" in kiln("fault", "slow-dispatch", pool, node, "--delay", "0", expect=ExitCode.FAILED).stderr


def _fault(story: list[dict], name: str) -> dict:
    return next(r for r in story if r["kind"] == "fault" and r["to"] == name)


def _with_file(task_id: str, url: str, command: str = "test -s in.txt") -> models.BatchTaskCreateOptions:
    files = [models.ResourceFile(http_url=url, file_path="in.txt")]
    return models.BatchTaskCreateOptions(id=task_id, command_line=shell(command), resource_files=files)


def _completed(client: BatchClient, job_id: str, task_id: str) -> models.BatchTask:
    return wait_for(
        lambda: (t := client.get_task(job_id, task_id)).state == "completed" and t, what=f"task {task_id} completed"
    )


def test_a_jobs_next_download_fails_as_a_missing_blob_fails_it(kiln, client, server, pool, cleanup):
    """The task sees the pre-processing error a real 404 gives: no exit code, BlobNotFound; the fault is spent."""
    job_id = _job(client, cleanup, pool)
    found, missing = f"{server.endpoint}/ui/login", f"{server.endpoint}/ui/static/missing.txt"  # Kiln serves both
    kiln("fault", "fail-next-download", "--job", job_id, "--status", "404")
    client.create_task(job_id, _with_file("faulted", found))
    faulted = _completed(client, job_id, "faulted").execution_info
    client.create_task(job_id, _with_file("real", missing))
    real = _completed(client, job_id, "real").execution_info
    assert (faulted.exit_code, faulted.result) == (real.exit_code, real.result) == (None, "failure")
    for info in (faulted.failure_info, real.failure_info):
        assert (info.category, info.code) == ("usererror", "BlobNotFound")
        assert [(d.name, d.value) for d in info.details] == [("FilePath", "in.txt")]
    assert faulted.failure_info.message == real.failure_info.message.replace(missing, found)

    client.create_task(job_id, _with_file("after", found))
    assert _completed(client, job_id, "after").execution_info.exit_code == 0  # one fault, one download
    fault = _fault(_story(kiln, job_id, "faulted"), "fail-next-download")
    assert (
        fault["detail"] == "reason HTTP 404" and f"/kiln/jobs/{job_id}/faults/fail-next-download" in fault["stimulus"]
    )
    assert not any(r["kind"] == "fault" for r in _story(kiln, job_id, "after"))


class _Container(http.server.BaseHTTPRequestHandler):
    """Stands in for a storage container: keeps what is PUT into it (uploadbatchservicelogs)."""

    received: ClassVar[list[bytes]] = []

    def do_PUT(self) -> None:
        self.received.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(201)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


def _node_log(client: BatchClient, pool_id: str, node_id: str) -> str:
    """Kiln's service log of the node, as uploadbatchservicelogs uploads it."""
    storage = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Container)
    threading.Thread(target=storage.serve_forever, daemon=True).start()
    try:
        container = f"http://127.0.0.1:{storage.server_port}/logs"
        since = datetime.now(UTC) - timedelta(hours=1)
        options = models.UploadBatchServiceLogsOptions(container_url=container, start_time=since)
        client.upload_node_logs(pool_id, node_id, options)
    finally:
        storage.shutdown()
    return _Container.received.pop().decode()


def test_a_nodes_next_start_task_download_and_dispatch(kiln, client, server, cleanup):
    """On one node: the next start task exits as asked (the node is starttaskfailed, as on Azure), the next
    download is denied, and the next step waits before it is sent."""
    start = models.BatchStartTask(command_line="/bin/true", wait_for_success=True)
    pool_id = create_pool_and_wait(client, nodes=1, start_task=start)
    cleanup(pool=pool_id)
    [node] = [n.id for n in client.list_nodes(pool_id)]

    kiln("fault", "fail-next-start-task", pool_id, node, "--exit-code", "3")
    restart_node(client, pool_id, node).result()
    failed = wait_for(lambda: (n := client.get_node(pool_id, node)).state == "starttaskfailed" and n, 120)
    info = failed.start_task_info
    assert (info.exit_code, info.result, info.failure_info.code) == (3, "failure", "FailureExitCode")
    log = _node_log(client, pool_id, node)
    assert "fail-next-start" in log and f"/kiln/pools/{pool_id}/nodes/{node}/faults/fail-next-start-task" in log
    restart_node(client, pool_id, node).result()  # the fault is spent: its start task runs as written
    wait_for(lambda: client.get_node(pool_id, node).state == "idle", 120, "the node idle again")

    job_id = _job(client, cleanup, pool_id)
    kiln("fault", "fail-next-download", "--pool", pool_id, "--node", node, "--status", "403")
    client.create_task(job_id, _with_file("denied", f"{server.endpoint}/ui/login"))
    denied = _completed(client, job_id, "denied").execution_info
    assert (denied.exit_code, denied.failure_info.category, denied.failure_info.code) == (
        None,
        "usererror",
        "BlobAccessDenied",
    )
    assert _fault(_story(kiln, job_id, "denied"), "fail-next-download")["nodeId"] == node

    kiln("fault", "slow-dispatch", pool_id, node, "--delay", "3", "--steps", "1")
    client.create_task(job_id, models.BatchTaskCreateOptions(id="slow", command_line="date +%s.%N"))
    slow = _completed(client, job_id, "slow")
    began = float(read_task_file(client, job_id, "slow", "stdout.txt"))
    assert began - slow.execution_info.start_time.timestamp() >= 3  # running (dispatched) 3 s before it ran
    fault = _fault(_story(kiln, job_id, "slow"), "slow-dispatch")
    assert (fault["nodeId"], fault["detail"]) == (node, "reason dispatch delayed 3s")
