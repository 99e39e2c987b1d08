"""A store transaction that does not commit leaves the scheduler's memory as it was (kiln.undo).

The server runs in this process (its store is the seam: SQLite's commit is made to fail), with real nodes,
and the official SDK drives a job through placement, preparation and release, dependencies, retries, a
multi-instance task, terminate, delete, disable and enable. Every write transaction first runs once with a
commit that fails: memory must then equal what it was before, and the retry must carry on as if nothing
happened. A second test refuses every write for a while: the server must resume by itself once writes
pass again (results that arrived meanwhile are applied then, not lost).
"""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from azure.batch import BatchClient, models
from azure.core.credentials import AzureNamedKeyCredential

from kiln.cli.embedded import free_port
from kiln.core.dependencies import DependencyGraph
from kiln.scheduler.engine import Scheduler
from kiln.scheduler.slots import JobQueue
from kiln.server import Settings, build_app
from kiln.store.database import Database
from kiln.testing import create_pool_and_wait, shell, terminate_job, unique, wait_for, wait_tasks_completed


def memory(scheduler: Scheduler) -> dict[str, Any]:
    """Everything the scheduler keeps between transactions, as plain comparable data."""
    parts = ("nodes", "pools", "jobs", "preps", "waiting", "steps", "instance_counts", "instances")
    kept = {name: getattr(scheduler, name) for name in (*parts, "subtask_nodes", "_instance_plans")}
    kept["timers"] = scheduler.timers._actions
    return plain(kept)


def plain(value: Any) -> Any:
    if isinstance(value, JobQueue):
        return ("queue", sorted(value.heap), sorted(value.queued))
    if isinstance(value, DependencyGraph):
        return plain(vars(value))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if callable(value):
        return ("callable", id(value))
    return value


class CommitFailure:
    """Makes SQLite's COMMIT fail ("database or disk is full") while `failing` is set, for the writes on the
    server's event loop only: a read committing on the store's thread meanwhile is left alone (its failure
    would be a 500 that the SDK retries, a retried request the test did not mean)."""

    def __init__(self, database: Database) -> None:
        self.failing = False
        self.failed = 0
        self.writer: threading.Thread | None = None  #: the thread whose commits fail: the server's event loop
        dialect = database.engine.dialect
        real = dialect.do_commit

        def do_commit(dbapi_connection: Any) -> None:
            if self.failing and threading.current_thread() is self.writer:
                self.failed += 1
                raise sqlite3.OperationalError("database or disk is full")
            real(dbapi_connection)

        dialect.do_commit = do_commit  # type: ignore[method-assign]


class InProcessServer:
    """`kiln serve` in a thread of this process, so that the test reaches its store and scheduler."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        app = build_app(Settings(port=self.port, data_dir=data_dir))
        self.control = app.state.kiln.control
        self.server = uvicorn.Server(uvicorn.Config(app, port=self.port, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, name="kiln-in-process", daemon=True)

    @property
    def scheduler(self) -> Scheduler:
        return self.control.scheduler

    @property
    def database(self) -> Database:
        return self.control.database

    def client(self) -> BatchClient:
        credential = AzureNamedKeyCredential(*_account())
        return BatchClient(f"http://127.0.0.1:{self.port}", credential)

    def __enter__(self) -> InProcessServer:
        self.thread.start()
        wait_for(lambda: self.server.started, timeout=60, what="the in-process server to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(60)


def _account() -> tuple[str, str]:
    settings = Settings()
    return settings.account_name, settings.account_key


@pytest.fixture
def in_process(open_tmp: Path) -> Iterator[InProcessServer]:
    with InProcessServer(open_tmp / "data") as server:
        yield server


def fail_each_commit_once(server: InProcessServer) -> list[str]:
    """Every write runs first with a commit that fails, then for real. Returns what memory kept of each
    failed one ("" where it was as before); an assertion inside the server would only reach its log."""
    database, scheduler = server.database, server.scheduler
    commits = CommitFailure(database)
    inline = database._transact_inline
    differences: list[str] = []

    def transact(work: Callable) -> Any:
        before = memory(scheduler)
        commits.writer = threading.current_thread()
        commits.failing = True
        try:
            inline(work)
        except Exception as failure:  # the store's own error, as a full disk raises it
            differences.append("" if "database or disk is full" in str(failure) else f"raised {failure!r}")
            differences[-1] += _difference(before, memory(scheduler))
        else:
            differences.append("the commit did not fail")
        finally:
            commits.failing = False
        return inline(work)

    database._transact_inline = transact  # type: ignore[method-assign]
    return differences


def _difference(before: dict[str, Any], after: dict[str, Any]) -> str:
    return "; ".join(
        f"{name}: {before.get(name)!r} -> {after.get(name)!r}"
        for name in sorted(set(before) | set(after))
        if before.get(name) != after.get(name)
    )[:4000]


def test_a_failed_commit_leaves_memory_as_it_was_at_every_step_of_a_job(in_process, marks_dir):
    client = in_process.client()
    pool_id = create_pool_and_wait(client, nodes=2, slots=1, enable_inter_node_communication=True)
    differences = fail_each_commit_once(in_process)
    job_id = unique("undo")
    client.create_job(
        models.BatchJobCreateOptions(
            id=job_id,
            pool_info=models.BatchPoolInfo(pool_id=pool_id),
            uses_task_dependencies=True,
            job_preparation_task=models.BatchJobPreparationTask(command_line=shell("echo prep")),
            job_release_task=models.BatchJobReleaseTask(command_line=shell("echo release")),
        )
    )
    tasks = [models.BatchTaskCreateOptions(id=f"t{i}", command_line=shell(f"echo {i}")) for i in range(6)] + [
        models.BatchTaskCreateOptions(
            id="after",
            command_line=shell("echo after"),
            depends_on=models.BatchTaskDependencies(task_ids=["t0", "t1"]),
        ),
        models.BatchTaskCreateOptions(
            id="retried",
            command_line=shell("exit 3"),
            constraints=models.BatchTaskConstraints(max_task_retry_count=1),
        ),
        models.BatchTaskCreateOptions(
            id="wide",
            command_line=shell("echo $AZ_BATCH_HOST_LIST"),
            multi_instance_settings=models.MultiInstanceSettings(
                coordination_command_line=shell("true"), number_of_instances=2
            ),
        ),
        models.BatchTaskCreateOptions(
            id="held", command_line=shell(f"while [ ! -e {marks_dir}/go ]; do sleep 0.05; done")
        ),
    ]
    client.create_task_collection(job_id, models.BatchTaskGroup(task_values=tasks))

    def running(task_id: str) -> bool:
        assert [d for d in differences if d] == []  # memory kept a failed transaction's change
        return client.get_task(job_id, task_id).state == "running"

    wait_for(lambda: running("held"), timeout=60, what="held to run")
    client.begin_disable_job(
        job_id, models.BatchJobDisableOptions(disable_tasks="requeue"), polling_interval=0.5
    ).result()
    client.begin_enable_job(job_id, polling_interval=0.5).result()
    client.create_task(job_id, models.BatchTaskCreateOptions(id="gone", command_line=shell("sleep 30")))
    client.delete_task(job_id, "gone")
    wait_for(lambda: running("held"), timeout=60, what="held to run again")
    client.terminate_task(job_id, "held")
    wait_tasks_completed(client, job_id, timeout=120)

    by_id = {task.id: task for task in client.list_tasks(job_id)}
    assert by_id["after"].execution_info.exit_code == 0
    assert by_id["retried"].execution_info.retry_count == 1
    assert by_id["retried"].execution_info.exit_code == 3
    assert by_id["wide"].execution_info.exit_code == 0
    assert by_id["held"].execution_info.failure_info.code == "TaskEnded"
    assert all(by_id[f"t{i}"].execution_info.exit_code == 0 for i in range(6))
    terminate_job(client, job_id)
    wait_for(
        lambda: all(
            s.job_release_task_execution_info for s in client.list_job_preparation_and_release_task_status(job_id)
        ),
        timeout=60,
        what="release tasks",
    )
    assert [d for d in differences if d] == []
    assert len(differences) > 20  # the scenario went through many transactions, each checked


def test_the_server_resumes_by_itself_when_writes_pass_again(in_process):
    client = in_process.client()
    pool_id = create_pool_and_wait(client, nodes=1, slots=2)
    job_id = unique("resume")
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id)))
    client.create_task_collection(
        job_id,
        models.BatchTaskGroup(
            task_values=[models.BatchTaskCreateOptions(id=f"t{i}", command_line=shell("sleep 0.5")) for i in range(6)]
        ),
    )
    wait_for(lambda: any(t.state == "running" for t in client.list_tasks(job_id)), timeout=60, what="a task to run")
    commits = CommitFailure(in_process.database)
    commits.writer = in_process.thread  # the server's event loop runs there
    commits.failing = True  # the running tasks end while nothing can be stored: their results wait in memory
    wait_for(lambda: in_process.scheduler._results_inbox, timeout=60, what="results held back")
    wait_for(lambda: commits.failed >= 3, timeout=60, what="writes refused again")
    commits.failing = False
    wait_tasks_completed(client, job_id, timeout=60)
    tasks = list(client.list_tasks(job_id))
    assert all(t.execution_info.exit_code == 0 for t in tasks), [(t.id, t.execution_info) for t in tasks]
    assert all(t.execution_info.requeue_count == 0 for t in tasks)  # every run was counted once
