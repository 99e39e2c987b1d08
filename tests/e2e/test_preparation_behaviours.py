"""Job preparation and release behaviours beyond the basics (batch-semantics §4): waitForSuccess=false,
wall-clock limits, resource files, reboot and reimage, job end paths, load, the status list, retention."""

from __future__ import annotations

import datetime
import os
import shutil
import stat
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from azure.batch import models
from azure.batch.models._models import BatchJobTerminateOptions
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

from kiln.testing import (
    create_pool_and_wait,
    read_node_file,
    read_task_file,
    restart_node,
    shell,
    unique,
    wait_for,
    wait_job_state,
    wait_tasks_completed,
)

PREP_DIR = "workitems/{job}/job-1/jobpreparation"
RELEASE_DIR = "workitems/{job}/job-1/jobrelease"


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module", autouse=True)
def _traversable_data_dir(server) -> Iterator[None]:
    """A root server runs non-admin steps under task uids of their own, which must pass through every
    directory above the node roots; pytest's basetemp directories are 0700. Add o+x while this module runs."""
    changed = []
    for directory in [Path(server.data_dir).resolve(), *Path(server.data_dir).resolve().parents]:
        mode = stat.S_IMODE(directory.stat().st_mode)
        if not mode & stat.S_IXOTH:
            os.chmod(directory, mode | stat.S_IXOTH)
            changed.append((directory, mode))
    yield
    for directory, mode in changed:
        os.chmod(directory, mode)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A world-writable directory outside the node roots (a reimage wipes those) for markers and logs:
    steps may run as unprivileged uids, so pytest's 0700 tmp dirs are out of their reach."""
    path = Path(tempfile.mkdtemp(prefix="kiln-prep-", dir="/tmp"))
    os.chmod(path, 0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def own_pool(client, cleanup) -> Callable[..., str]:
    """A pool of the test's own (for tests that reboot, reimage or resize nodes), deleted afterwards."""

    def make(nodes: int = 1, slots: int = 1) -> str:
        pool_id = create_pool_and_wait(client, nodes=nodes, slots=slots)
        cleanup(pool=pool_id)
        return pool_id

    return make


class _Files(BaseHTTPRequestHandler):
    """Serves `files` by path, 404 otherwise, and counts every GET."""

    files: dict[str, bytes] = {}
    hits: Counter = Counter()

    def do_GET(self) -> None:
        type(self).hits[self.path] += 1
        body = self.files.get(self.path)
        self.send_response(200 if body is not None else 404)
        payload = body if body is not None else b"not found"
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def http_files() -> Iterator[tuple[str, type[_Files]]]:
    """A local HTTP server for resource files: (base URL, handler class with `files` and `hits`)."""
    handler = type("Files", (_Files,), {"files": {}, "hits": Counter()})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, name="resource-files", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()
    httpd.server_close()
    thread.join(10)


# ---------------------------------------------------------------------------------------------- helpers
def _job(
    pool_id: str,
    job_id: str,
    prep: models.BatchJobPreparationTask,
    release: models.BatchJobReleaseTask | None = None,
    **fields,
) -> models.BatchJobCreateOptions:
    return models.BatchJobCreateOptions(
        id=job_id,
        pool_info=models.BatchPoolInfo(pool_id=pool_id),
        job_preparation_task=prep,
        job_release_task=release,
        **fields,
    )


def _task(task_id: str, command_line: str = "/bin/true", **fields) -> models.BatchTaskCreateOptions:
    return models.BatchTaskCreateOptions(id=task_id, command_line=command_line, **fields)


def _statuses(client, job_id: str, **query) -> dict[str, models.BatchJobPreparationAndReleaseTaskStatus]:
    return {s.node_id: s for s in client.list_job_preparation_and_release_task_status(job_id, **query)}


def _wait_preps_completed(client, job_id: str, count: int = 1, timeout: float = 60):
    """Until `count` nodes have a completed prep; returns {node_id: status}."""

    def done():
        statuses = _statuses(client, job_id)
        completed = {n: s for n, s in statuses.items() if s.job_preparation_task_execution_info.state == "completed"}
        return completed if len(completed) >= count else None

    return wait_for(done, timeout, f"{count} completed prep(s) of {job_id}")


def _wait_task(client, job_id: str, task_id: str, predicate, timeout: float = 60, what: str = "task state"):
    return wait_for(
        lambda: (t := client.get_task(job_id, task_id)) and predicate(t) and t, timeout, f"{job_id}/{task_id}: {what}"
    )


def _terminate(client, job_id: str, timeout: float = 60) -> None:
    """Terminate, then wait (bounded) for `completed`; SDK 15.1 needs an explicit reason (see kiln.testing)."""
    client.begin_terminate_job(job_id, BatchJobTerminateOptions(termination_reason="UserTerminate"), polling_interval=1)
    wait_job_state(client, job_id, "completed", timeout)


def _node_file_gone(client, pool_id: str, node_id: str, path: str) -> bool:
    try:
        read_node_file(client, pool_id, node_id, path)
    except ResourceNotFoundError:
        return True
    return False


def _only_node(client, pool_id: str) -> str:
    [node] = list(client.list_nodes(pool_id))
    return node.id


def _wait_node_idle(client, pool_id: str, node_id: str) -> None:
    wait_for(lambda: client.get_node(pool_id, node_id).state == "idle", 60, f"node {node_id} idle")


# ---------------------------------------------------------------------------------------------- 1. waitForSuccess=false
def test_without_wait_for_success_tasks_start_while_prep_runs(client, pool, cleanup):
    job_id = unique("nowait")
    cleanup(job=job_id)
    flag = f"$AZ_BATCH_NODE_SHARED_DIR/{job_id}.task-ran"
    # prep can only succeed once the task has run: had the task waited for prep, prep would give up (exit 1)
    prep = shell(f"for i in $(seq 200); do [ -f {flag} ] && exit 0; sleep 0.1; done; exit 1")
    client.create_job(_job(pool, job_id, models.BatchJobPreparationTask(command_line=prep, wait_for_success=False)))
    client.create_task(job_id, _task("t", shell(f"touch {flag}")))

    seen = []

    def completed():
        task = client.get_task(job_id, "t")
        seen.append(task.state)
        return task.state == "completed" and task

    task = wait_for(completed, 60, "task completed")
    status = _wait_preps_completed(client, job_id)[task.node_info.node_id]
    prep = status.job_preparation_task_execution_info
    assert task.execution_info.exit_code == 0 and task.execution_info.result == "success"
    assert prep.result == "success" and prep.exit_code == 0
    assert task.execution_info.start_time < prep.end_time
    assert "preparing" not in seen and task.previous_state == "running"


# ---------------------------------------------------------------------------------------------- 2. prep wall clock
def test_prep_wall_clock_timeout_is_retried_then_excludes_the_node_for_that_job_only(client, own_pool, cleanup):
    pool_id = own_pool(nodes=1)
    node_id = _only_node(client, pool_id)
    job_id, other_id = unique("prepwall"), unique("other")
    cleanup(job=job_id)
    cleanup(job=other_id)
    client.create_job(
        _job(
            pool_id,
            job_id,
            models.BatchJobPreparationTask(
                command_line="/bin/sleep 30",
                constraints=models.BatchTaskConstraints(
                    max_wall_clock_time=datetime.timedelta(seconds=1), max_task_retry_count=1
                ),
            ),
        )
    )
    client.create_task(job_id, _task("t"))

    prep = _wait_preps_completed(client, job_id)[node_id].job_preparation_task_execution_info
    assert prep.state == "completed" and prep.result == "failure"
    assert prep.retry_count == 1 and prep.last_retry_time is not None
    assert prep.failure_info is not None and prep.failure_info.code == "MaxWallClockTimeExceeded"
    task = _wait_task(client, job_id, "t", lambda t: t.state == "active", 30, "back to active")
    assert task.previous_state == "preparing"

    # the node still serves other jobs ...
    client.create_job(models.BatchJobCreateOptions(id=other_id, pool_info=models.BatchPoolInfo(pool_id=pool_id)))
    client.create_task(other_id, _task("o"))
    [other] = wait_tasks_completed(client, other_id, 60)
    assert other.node_info.node_id == node_id and other.execution_info.exit_code == 0
    # ... but not this one: its task stays active and prep is not started again
    task = client.get_task(job_id, "t")
    assert task.state == "active" and task.previous_state == "preparing"
    prep = _statuses(client, job_id)[node_id].job_preparation_task_execution_info
    assert prep.state == "completed" and prep.retry_count == 1


# ---------------------------------------------------------------------------------------------- 3. release wall clock
def test_release_wall_clock_timeout_fails_release_once_and_the_job_still_completes(client, pool, cleanup):
    job_id = unique("relwall")
    cleanup(job=job_id)
    log = f"$AZ_BATCH_NODE_SHARED_DIR/{job_id}.log"
    client.create_job(
        _job(
            pool,
            job_id,
            models.BatchJobPreparationTask(command_line="/bin/true"),
            models.BatchJobReleaseTask(
                command_line=shell(f"echo release >> {log}; sleep 30"),
                max_wall_clock_time=datetime.timedelta(seconds=1),
            ),
        )
    )
    client.create_task(job_id, _task("t"))
    [task] = wait_tasks_completed(client, job_id, 60)
    node_id = task.node_info.node_id

    _terminate(client, job_id)
    job = client.get_job(job_id)
    assert job.state == "completed" and job.execution_info.termination_reason == "UserTerminate"
    release = _statuses(client, job_id)[node_id].job_release_task_execution_info
    assert release.state == "completed" and release.result == "failure"
    assert release.failure_info is not None
    assert read_node_file(client, pool, node_id, f"shared/{job_id}.log").split() == ["release"]  # ran once


# ---------------------------------------------------------------------------------------------- 4. resource files
def test_prep_resource_file_is_read_by_the_jobs_tasks(client, pool, cleanup, http_files):
    base, handler = http_files
    content = b"downloaded by the preparation task\n"
    handler.files["/prep-input.txt"] = content
    job_id = unique("prepfile")
    cleanup(job=job_id)
    client.create_job(
        _job(
            pool,
            job_id,
            models.BatchJobPreparationTask(
                command_line="/bin/true",
                resource_files=[models.ResourceFile(http_url=f"{base}/prep-input.txt", file_path="inputs/data.txt")],
            ),
        )
    )
    client.create_tasks(
        job_id, [_task(f"t{i}", shell("cat $AZ_BATCH_JOB_PREP_WORKING_DIR/inputs/data.txt")) for i in range(3)]
    )
    tasks = wait_tasks_completed(client, job_id, 60)
    for task in tasks:
        assert task.execution_info.exit_code == 0, read_task_file(client, job_id, task.id, "stderr.txt")
        assert read_task_file(client, job_id, task.id, "stdout.txt") == content.decode()
    for status in _statuses(client, job_id).values():
        assert status.job_preparation_task_execution_info.result == "success"


def test_prep_resource_file_not_found_fails_without_retry(client, pool, cleanup, http_files):
    base, handler = http_files
    job_id = unique("prep404")
    cleanup(job=job_id)
    path = f"/{job_id}/missing.txt"
    client.create_job(
        _job(
            pool,
            job_id,
            models.BatchJobPreparationTask(
                command_line="/bin/true",
                constraints=models.BatchTaskConstraints(max_task_retry_count=3),
                resource_files=[models.ResourceFile(http_url=f"{base}{path}", file_path="missing.txt")],
            ),
        )
    )
    client.create_task(job_id, _task("t"))

    # the task returns to active after each failure and tries the pool's other node: both end excluded
    statuses = _wait_preps_completed(client, job_id, count=2)
    for status in statuses.values():
        prep = status.job_preparation_task_execution_info
        assert prep.result == "failure" and prep.retry_count == 0 and prep.last_retry_time is None
        assert prep.failure_info.code == "BlobNotFound" and prep.failure_info.category == "usererror"
    assert handler.hits[path] == 2  # one download attempt per node: pre-processing errors are not retried
    task = _wait_task(client, job_id, "t", lambda t: t.state == "active", 30, "back to active")
    assert task.previous_state == "preparing"


# ---------------------------------------------------------------------------------------------- 1. userIdentity
@pytest.mark.root("accounts are switched only when the server runs as root")
@pytest.mark.parametrize("scope", ["pool", "task"])
def test_release_deletes_preps_files_under_the_pool_scoped_auto_user_only(client, pool, cleanup, scope):
    """Azure's default autoUser scope is pool: prep, tasks and release of a node share one account, so
    release can clean up what prep left in its working directory. Scoped to the task, it cannot."""
    job_id = unique(f"scope-{scope}")
    cleanup(job=job_id)
    release_identity = models.UserIdentity(auto_user=models.AutoUserSpecification(scope=scope))
    client.create_job(
        _job(
            pool,
            job_id,
            models.BatchJobPreparationTask(command_line=shell("echo data > common.dat; id -u")),
            models.BatchJobReleaseTask(
                command_line=shell("id -u; rm $AZ_BATCH_JOB_PREP_WORKING_DIR/common.dat"),
                user_identity=release_identity,
            ),
        )
    )
    client.create_task(job_id, _task("t", shell("cat $AZ_BATCH_JOB_PREP_WORKING_DIR/common.dat; id -u")))
    [task] = wait_tasks_completed(client, job_id, 60)
    node_id, prep_dir = task.node_info.node_id, PREP_DIR.format(job=job_id)
    prep_uid = read_node_file(client, pool, node_id, f"{prep_dir}/stdout.txt").strip()
    assert read_task_file(client, job_id, "t", "stdout.txt") == f"data\n{prep_uid}\n"
    _terminate(client, job_id)
    release = _statuses(client, job_id)[node_id].job_release_task_execution_info
    release_uid = read_node_file(client, pool, node_id, f"{RELEASE_DIR.format(job=job_id)}/stdout.txt").strip()
    if scope == "pool":
        assert (release.exit_code, release_uid) == (0, prep_uid)
        assert _node_file_gone(client, pool, node_id, f"{prep_dir}/wd/common.dat")
    else:
        assert release.exit_code == 1 and release_uid != prep_uid
        assert read_node_file(client, pool, node_id, f"{prep_dir}/wd/common.dat") == "data\n"


# ---------------------------------------------------------------------------------------------- 5. reboot and reimage
def test_reboot_reruns_prep_only_with_rerun_on_node_reboot_after_success(client, own_pool, cleanup):
    pool_id = own_pool(nodes=1, slots=2)
    node_id = _only_node(client, pool_id)
    jobs = {True: unique("rerun"), False: unique("norerun")}
    for rerun, job_id in jobs.items():
        cleanup(job=job_id)
        client.create_job(
            _job(
                pool_id,
                job_id,
                models.BatchJobPreparationTask(
                    command_line=shell(f"echo prep >> $AZ_BATCH_NODE_SHARED_DIR/{job_id}.log"),
                    rerun_on_node_reboot_after_success=rerun,
                ),
            )
        )
        client.create_task(job_id, _task("before"))
    for job_id in jobs.values():
        wait_tasks_completed(client, job_id, 60)

    restart_node(client, pool_id, node_id).result()
    _wait_node_idle(client, pool_id, node_id)

    for job_id in jobs.values():  # each task counts prep runs as it starts
        client.create_task(job_id, _task("after", shell(f"wc -l < $AZ_BATCH_NODE_SHARED_DIR/{job_id}.log")))
    for rerun, job_id in jobs.items():
        after = _wait_task(client, job_id, "after", lambda t: t.state == "completed", 60, "completed")
        assert after.node_info.node_id == node_id and after.execution_info.exit_code == 0
        assert read_task_file(client, job_id, "after", "stdout.txt").strip() == ("2" if rerun else "1")
        prep = _statuses(client, job_id)[node_id].job_preparation_task_execution_info
        assert prep.state == "completed" and prep.result == "success"


@pytest.mark.parametrize(
    ("operation", "option"),
    [
        ("reboot", "requeue"),
        ("reboot", "terminate"),
        ("reboot", "taskcompletion"),
        ("reboot", "retaineddata"),
        ("reimage", "terminate"),
        ("reimage", "taskcompletion"),
    ],
)
def test_the_restart_option_decides_what_happens_to_the_running_task(
    client, own_pool, cleanup, shared_tmp, operation, option
):
    """requeue: killed and run again; terminate: ended as failed; taskcompletion and retaineddata: left to
    finish, and the restart waits for it. No task starts on the node meanwhile; prep reruns after."""
    pool_id = own_pool(nodes=1)
    node_id = _only_node(client, pool_id)
    job_id, go = unique(f"{operation}-{option}"), shared_tmp / f"{option}.go"
    cleanup(job=job_id)
    client.create_job(
        _job(
            pool_id,
            job_id,
            models.BatchJobPreparationTask(
                command_line=shell(f"echo prep >> {shared_tmp}/{option}.preps"), rerun_on_node_reboot_after_success=True
            ),
        )
    )
    client.create_task(job_id, _task("running", shell(f"while [ ! -e {go} ]; do sleep 0.1; done")))
    _wait_task(client, job_id, "running", lambda t: t.state == "running", 60, "running")

    poller = restart_node(client, pool_id, node_id, operation, option)
    if option in ("taskcompletion", "retaineddata"):  # the restart waits for the task: the node shows it meanwhile
        assert client.get_node(pool_id, node_id).state == ("rebooting" if operation == "reboot" else "reimaging")
    # (with requeue or terminate a light node's restart can be over before this GET: nothing waits for it)
    client.create_task(job_id, _task("later"))
    go.touch()
    poller.result()
    _wait_node_idle(client, pool_id, node_id)
    tasks = {t.id: t for t in wait_tasks_completed(client, job_id, 60)}

    running, later = tasks["running"].execution_info, tasks["later"].execution_info
    assert later.result == "success" and tasks["later"].node_info.node_id == node_id
    assert (shared_tmp / f"{option}.preps").read_text() == "prep\nprep\n"  # rerun after the restart
    if option == "requeue":
        assert (running.result, running.exit_code, running.requeue_count, running.retry_count) == ("success", 0, 1, 0)
    elif option == "terminate":
        assert (running.result, running.requeue_count) == ("failure", 0)
        assert running.failure_info.code == "TaskEnded"
    else:
        assert (running.result, running.exit_code, running.requeue_count) == ("success", 0, 0)
        assert running.end_time <= later.start_time  # nothing else started before it finished


def test_reimage_gives_prep_a_fresh_start_and_release_follows_this_incarnation(client, own_pool, cleanup, shared_tmp):
    pool_id = own_pool(nodes=1)
    node_id = _only_node(client, pool_id)
    again, flaky, released = unique("again"), unique("flaky"), unique("released")
    for job_id in (again, flaky, released):
        cleanup(job=job_id)
    # prep reruns after a reimage even when it would not after a reboot
    client.create_job(
        _job(
            pool_id,
            again,
            models.BatchJobPreparationTask(
                command_line=shell(f"echo prep >> {shared_tmp}/{again}.log"), rerun_on_node_reboot_after_success=False
            ),
        )
    )
    client.create_task(again, _task("before"))
    wait_tasks_completed(client, again, 60)
    # prep, then no more tasks: after the reimage, this node's incarnation never ran prep
    release = models.BatchJobReleaseTask(command_line=shell(f"echo release >> {shared_tmp}/{released}.log"))
    client.create_job(_job(pool_id, released, models.BatchJobPreparationTask(command_line="/bin/true"), release))
    client.create_task(released, _task("before"))
    wait_tasks_completed(client, released, 60)
    # prep fails the first time only: the node is excluded for this job until it is reimaged
    marker = f"{shared_tmp}/{flaky}.failed-once"
    client.create_job(
        _job(
            pool_id,
            flaky,
            models.BatchJobPreparationTask(
                command_line=shell(f"if [ -e {marker} ]; then exit 0; fi; touch {marker}; exit 1")
            ),
        )
    )
    client.create_task(flaky, _task("t"))
    prep = _wait_preps_completed(client, flaky)[node_id].job_preparation_task_execution_info
    assert prep.result == "failure" and prep.exit_code == 1
    _wait_task(
        client, flaky, "t", lambda t: t.state == "active" and t.previous_state == "preparing", 30, "back to active"
    )

    restart_node(client, pool_id, node_id, "reimage").result()
    _wait_node_idle(client, pool_id, node_id)

    task = _wait_task(client, flaky, "t", lambda t: t.state == "completed", 60, "completed after the reimage")
    assert task.node_info.node_id == node_id and task.execution_info.exit_code == 0
    prep = _statuses(client, flaky)[node_id].job_preparation_task_execution_info
    assert prep.result == "success" and prep.exit_code == 0 and prep.retry_count == 0

    client.create_task(again, _task("after", shell(f"wc -l < {shared_tmp}/{again}.log")))
    after = _wait_task(client, again, "after", lambda t: t.state == "completed", 60, "completed")
    assert after.execution_info.exit_code == 0
    assert read_task_file(client, again, "after", "stdout.txt").strip() == "2"

    _terminate(client, released)
    assert all(s.job_release_task_execution_info is None for s in _statuses(client, released).values())
    assert not (shared_tmp / f"{released}.log").exists()


# ---------------------------------------------------------------------------------------------- 6. job end paths
def test_job_wall_clock_expiry_ends_running_tasks_keeps_active_ones_and_runs_release(client, pool, cleanup):
    job_id = unique("jobwall")
    cleanup(job=job_id)
    log = f"$AZ_BATCH_NODE_SHARED_DIR/{job_id}.log"
    client.create_job(
        _job(
            pool,
            job_id,
            models.BatchJobPreparationTask(command_line="/bin/true"),
            models.BatchJobReleaseTask(command_line=shell(f"echo released >> {log}")),
            constraints=models.BatchJobConstraints(max_wall_clock_time=datetime.timedelta(seconds=5)),
        )
    )
    client.create_task(job_id, _task("long", "/bin/sleep 60"))
    _wait_task(client, job_id, "long", lambda t: t.state == "running", 30, "running")
    client.create_task(job_id, _task("never", required_slots=3))  # more slots than a node has: stays active

    wait_job_state(client, job_id, "completed", 60)
    job = client.get_job(job_id)
    assert job.execution_info.termination_reason == "MaxWallClockTimeExpiry"
    long = client.get_task(job_id, "long")
    assert long.state == "completed" and long.execution_info.result == "failure"
    assert client.get_task(job_id, "never").state == "active"
    node_id = long.node_info.node_id
    statuses = _statuses(client, job_id)
    assert list(statuses) == [node_id]
    release = statuses[node_id].job_release_task_execution_info
    assert release.state == "completed" and release.result == "success"
    assert read_node_file(client, pool, node_id, f"shared/{job_id}.log").split() == ["released"]


def test_a_terminating_or_deleting_job_refuses_new_tasks_and_updates(client, pool, cleanup, shared_tmp):
    terminating, deleting = unique("terming"), unique("deling")
    gates = {job_id: shared_tmp / f"{job_id}.go" for job_id in (terminating, deleting)}
    for job_id, gate in gates.items():
        cleanup(job=job_id)
        # release holds the job in terminating/deleting until the test opens the gate (bounded at 30 s)
        client.create_job(
            _job(
                pool,
                job_id,
                models.BatchJobPreparationTask(command_line="/bin/true"),
                models.BatchJobReleaseTask(
                    command_line=shell(f"for i in $(seq 300); do [ -e {gate} ] && exit 0; sleep 0.1; done; exit 1")
                ),
            )
        )
        client.create_task(job_id, _task("t"))
    update = models.BatchJobUpdateOptions(priority=5)

    def refused(job_id: str, code: str) -> None:
        with pytest.raises(ResourceExistsError) as caught:
            client.create_task(job_id, _task("late"))
        assert caught.value.status_code == 409 and caught.value.error.code == code
        with pytest.raises(ResourceExistsError) as caught:
            client.update_job(job_id, update)
        assert caught.value.status_code == 409 and caught.value.error.code == code

    def gone() -> bool:
        try:
            client.get_job(deleting)
        except ResourceNotFoundError:
            return True
        return False

    try:
        for job_id in gates:
            wait_tasks_completed(client, job_id, 60)

        client.begin_terminate_job(
            terminating, BatchJobTerminateOptions(termination_reason="UserTerminate"), polling_interval=1
        )
        assert client.get_job(terminating).state == "terminating"
        refused(terminating, "JobBeingTerminated")
        gates[terminating].touch()
        wait_job_state(client, terminating, "completed", 60)

        client.begin_delete_job(deleting, polling_interval=1)
        assert client.get_job(deleting).state == "deleting"
        refused(deleting, "JobBeingDeleted")
        gates[deleting].touch()
        wait_for(gone, 60, f"job {deleting} deleted")
    finally:
        for gate in gates.values():
            gate.touch()


# ---------------------------------------------------------------------------------------------- 7. load
def test_prep_runs_exactly_once_per_node_under_load(client, own_pool, cleanup):
    pool_id = own_pool(nodes=2, slots=8)
    job_id = unique("load")
    cleanup(job=job_id)
    client.create_job(
        _job(
            pool_id,
            job_id,
            models.BatchJobPreparationTask(
                command_line=shell(
                    f"echo $AZ_BATCH_NODE_ID >> $AZ_BATCH_NODE_SHARED_DIR/{job_id}.prep; sleep 1; "
                    "echo ready > $AZ_BATCH_TASK_WORKING_DIR/ready"
                )
            ),
        )
    )
    check = "/bin/sh -c 'test -f \"$AZ_BATCH_JOB_PREP_WORKING_DIR/ready\"'"
    client.create_tasks(job_id, [_task(f"t{i:03}", check) for i in range(200)])

    tasks = wait_tasks_completed(client, job_id, 150)
    assert len(tasks) == 200
    assert [t.id for t in tasks if t.execution_info.exit_code != 0] == []
    nodes = {t.node_info.node_id for t in tasks}
    assert len(nodes) == 2
    statuses = _statuses(client, job_id)
    assert set(statuses) == nodes
    for node_id in nodes:
        assert read_node_file(client, pool_id, node_id, f"shared/{job_id}.prep").split() == [node_id]
        prep = statuses[node_id].job_preparation_task_execution_info
        assert prep.result == "success" and prep.retry_count == 0
    counts = client.get_job_task_counts(job_id).task_counts
    assert (counts.active, counts.running, counts.completed, counts.succeeded, counts.failed) == (0, 0, 200, 200, 0)


# ---------------------------------------------------------------------------------------------- 8. status list
def test_status_list_filters_selects_pages_and_keeps_removed_nodes(client, own_pool, cleanup, shared_tmp):
    pool_id = own_pool(nodes=2)
    job_id = unique("statuslist")
    cleanup(job=job_id)
    # the first prep to run exits 3 (that node is then excluded), the other exits 0
    client.create_job(
        _job(
            pool_id,
            job_id,
            models.BatchJobPreparationTask(
                command_line=shell(f"mkdir {shared_tmp}/{job_id}.first 2>/dev/null && exit 3; exit 0")
            ),
        )
    )
    client.create_tasks(job_id, [_task("a", "/bin/sleep 1"), _task("b", "/bin/sleep 1")])
    tasks = wait_tasks_completed(client, job_id, 60)
    assert all(t.execution_info.exit_code == 0 for t in tasks)
    statuses = _statuses(client, job_id)
    assert set(statuses) == {n.id for n in client.list_nodes(pool_id)}
    [good] = [n for n, s in statuses.items() if s.job_preparation_task_execution_info.exit_code == 0]
    [bad] = [n for n, s in statuses.items() if s.job_preparation_task_execution_info.exit_code == 3]
    assert {t.node_info.node_id for t in tasks} == {good}

    assert list(_statuses(client, job_id, filter=f"nodeId eq '{bad}'")) == [bad]
    assert list(_statuses(client, job_id, filter="jobPreparationTaskExecutionInfo/exitCode eq 0")) == [good]
    assert list(_statuses(client, job_id, filter="jobPreparationTaskExecutionInfo/result eq 'failure'")) == [bad]
    assert list(_statuses(client, job_id, filter=f"poolId eq '{pool_id}' and nodeId ne '{bad}'")) == [good]
    selected = list(
        client.list_job_preparation_and_release_task_status(
            job_id, select=["nodeId", "jobPreparationTaskExecutionInfo"]
        )
    )
    assert {s.node_id for s in selected} == {good, bad}
    assert all(s.pool_id is None and s.node_url is None for s in selected)
    assert all(s.job_preparation_task_execution_info.state == "completed" for s in selected)
    paged = list(client.list_job_preparation_and_release_task_status(job_id, max_results=1))
    assert sorted(s.node_id for s in paged) == sorted([good, bad])

    client.begin_resize_pool(
        pool_id, models.BatchPoolResizeOptions(target_dedicated_nodes=1), polling_interval=1
    ).result()
    wait_for(lambda: len(list(client.list_nodes(pool_id))) == 1, 60, "one node left")
    [remaining] = [n.id for n in client.list_nodes(pool_id)]
    removed = ({good, bad} - {remaining}).pop()
    statuses = _statuses(client, job_id)
    assert set(statuses) == {good, bad}
    assert statuses[removed].pool_id == pool_id
    assert statuses[removed].job_preparation_task_execution_info.state == "completed"


# ---------------------------------------------------------------------------------------------- 9. retention
def test_prep_and_release_directories_go_after_their_retention_time(client, pool, cleanup):
    job_id = unique("retain")
    cleanup(job=job_id)
    two_seconds = datetime.timedelta(seconds=2)
    client.create_job(
        _job(
            pool,
            job_id,
            models.BatchJobPreparationTask(
                command_line="/bin/echo prepared", constraints=models.BatchTaskConstraints(retention_time=two_seconds)
            ),
            models.BatchJobReleaseTask(command_line="/bin/echo released", retention_time=two_seconds),
        )
    )
    client.create_task(job_id, _task("t", "/bin/echo tasked"))
    node_id = _wait_task(
        client, job_id, "t", lambda t: t.state in ("running", "completed"), 60, "past prep"
    ).node_info.node_id
    prep_dir = PREP_DIR.format(job=job_id)
    assert read_node_file(client, pool, node_id, f"{prep_dir}/stdout.txt") == "prepared\n"
    wait_for(lambda: _node_file_gone(client, pool, node_id, f"{prep_dir}/stdout.txt"), 30, "prep dir removed")
    assert _node_file_gone(client, pool, node_id, prep_dir)
    wait_tasks_completed(client, job_id, 60)
    assert read_task_file(client, job_id, "t", "stdout.txt") == "tasked\n"  # the task keeps its default P7D

    _terminate(client, job_id)
    release_dir = RELEASE_DIR.format(job=job_id)
    assert read_node_file(client, pool, node_id, f"{release_dir}/stdout.txt") == "released\n"
    wait_for(lambda: _node_file_gone(client, pool, node_id, f"{release_dir}/stdout.txt"), 30, "release dir removed")
    assert _node_file_gone(client, pool, node_id, release_dir)
    release = _statuses(client, job_id)[node_id].job_release_task_execution_info
    assert release.result == "success"  # the record outlives the directory


# ---------------------------------------------------------------------------------------------- 10. not tasks
def test_prep_and_release_are_not_tasks_of_the_job(client, pool, cleanup):
    job_id = unique("nottasks")
    cleanup(job=job_id)
    before = {n.id: n.total_tasks_run for n in client.list_nodes(pool)}
    client.create_job(
        _job(
            pool,
            job_id,
            models.BatchJobPreparationTask(command_line="/bin/true"),
            models.BatchJobReleaseTask(command_line="/bin/true"),
        )
    )
    client.create_tasks(job_id, [_task(f"t{i}") for i in range(3)])
    wait_tasks_completed(client, job_id, 60)
    _terminate(client, job_id)
    assert all(s.job_release_task_execution_info.state == "completed" for s in _statuses(client, job_id).values())

    assert sorted(t.id for t in client.list_tasks(job_id)) == ["t0", "t1", "t2"]
    for step_id in ("jobpreparation", "jobrelease"):
        with pytest.raises(ResourceNotFoundError) as caught:
            client.get_task(job_id, step_id)
        assert caught.value.error.code == "TaskNotFound"
    counts = client.get_job_task_counts(job_id)
    task_counts = counts.task_counts
    assert (
        task_counts.active,
        task_counts.running,
        task_counts.completed,
        task_counts.succeeded,
        task_counts.failed,
    ) == (0, 0, 3, 3, 0)
    assert counts.task_slot_counts.completed == 3
    after = {n.id: n.total_tasks_run for n in client.list_nodes(pool)}
    assert sum(after.values()) - sum(before.values()) == 3


def test_a_task_that_fits_no_node_does_not_block_the_tasks_behind_it(client):
    """requiredSlots above taskSlotsPerNode never runs (Azure does not validate it); the rest of the job runs."""
    pool_id = create_pool_and_wait(client, nodes=1, slots=2)
    job_id = unique("toobig")
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id)))
    client.create_task(job_id, models.BatchTaskCreateOptions(id="huge", command_line="/bin/true", required_slots=3))
    client.create_task(job_id, models.BatchTaskCreateOptions(id="small", command_line="/bin/true"))
    wait_for(lambda: client.get_task(job_id, "small").state == "completed", 60, "the small task to run")
    assert client.get_task(job_id, "huge").state == "active"
    client.begin_delete_job(job_id, polling_interval=1).result()
    client.begin_delete_pool(pool_id, polling_interval=1).result()
