"""pytest fixtures of the tests that drive a real `kiln serve` subprocess with the official azure-batch SDK
(tests/e2e, tests/security): their conftests import them, so each directory has its own session server.

A test marked `@pytest.mark.root("why")` needs root: it skips without, unless KILN_TEST_REQUIRE_ROOT=1 (set by
.ci/run, which runs as root) turns the skip into a failure (the conftests import `pytest_runtest_setup`)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from azure.batch import BatchClient
from azure.core.exceptions import ResourceNotFoundError

from kiln.cli.embedded import EmbeddedServer
from kiln.compute.node import identity
from kiln.scheduler.control import CHECK_ENV
from kiln.testing import create_pool_and_wait, make_client

#: Set to 1 where the tests run as root (CI): a test marked `root` then fails instead of skipping.
REQUIRE_ROOT_ENV = "KILN_TEST_REQUIRE_ROOT"


def require_root(why: str) -> None:
    """Skip the calling test when not running as root (fail it under KILN_TEST_REQUIRE_ROOT=1)."""
    if os.geteuid() != 0:
        reason = f"needs root: {why}"
        if os.environ.get(REQUIRE_ROOT_ENV) == "1":
            pytest.fail(f"{reason} ({REQUIRE_ROOT_ENV}=1)")
        pytest.skip(reason)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before any fixture of the test: a test (or module) marked `root` needs root."""
    marker = item.get_closest_marker("root")
    if marker is not None:
        require_root(*marker.args)


@pytest.fixture(scope="session", autouse=True)
def open_base(tmp_path_factory) -> Iterator[Path]:
    """Where data dirs go. Run as root, the server runs non-admin tasks as task accounts of their own,
    which must pass through the data dir's parents: pytest's tmp dirs are under a 0700 directory."""
    base = Path(tempfile.mkdtemp(prefix="kiln-e2e-"))
    os.chmod(base, 0o755)
    # The servers' workers claim task uids in a registry of ours, one for the whole run: xdist's workers
    # each have a base temp dir of their own, under one parent.
    run_temp = tmp_path_factory.getbasetemp()
    registry = (run_temp.parent if os.environ.get("PYTEST_XDIST_WORKER") else run_temp) / "uids"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(identity.REGISTRY_ENV, str(registry))
        patch.setenv(CHECK_ENV, "1")  # every test server checks the scheduler's invariants before each commit
        yield base
    shutil.rmtree(base, ignore_errors=True)


def open_dir(parent: Path, prefix: str = "kiln-") -> Path:
    """A new directory under `parent` that task accounts can pass through (but not write)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(path, 0o755)  # mkdtemp makes it 0700
    return path


@pytest.fixture
def open_tmp(open_base: Path, request) -> Path:
    """A test's own directory that task accounts can pass through (but not write)."""
    return open_dir(open_base, f"{request.node.name[:40]}-")


@pytest.fixture
def marks_dir(open_tmp: Path) -> Path:
    """A directory any task may write, like /tmp (1777), for tasks that leave marks for the test."""
    path = open_tmp / "marks"
    path.mkdir()
    os.chmod(path, 0o1777)
    return path


@pytest.fixture(scope="session")
def server(open_base: Path) -> Iterator[EmbeddedServer]:
    """One server for the read-mostly tests; tests that restart or kill it start their own."""
    with EmbeddedServer(open_base / "kiln") as running:
        yield running


@pytest.fixture(scope="session")
def client(server) -> BatchClient:
    return make_client(server)


@pytest.fixture
def cleanup(client) -> Iterator[Callable[..., None]]:
    """Register jobs and pools to delete after the test: cleanup(job=...), cleanup(pool=...). Jobs go
    first, so their release tasks run on live nodes."""
    jobs: list[str] = []
    pools: list[str] = []

    def register(*, job: str | None = None, pool: str | None = None) -> None:
        if job:
            jobs.append(job)
        if pool:
            pools.append(pool)

    yield register
    for job_id in jobs:
        try:
            client.begin_delete_job(job_id, polling_interval=0.5).result()
        except ResourceNotFoundError:
            pass
    for pool_id in pools:
        client.begin_delete_pool(pool_id, polling_interval=0.5).result()


@pytest.fixture(scope="session")
def pool(client) -> str:
    """A shared 2-node pool with 2 slots per node."""
    return create_pool_and_wait(client, nodes=2, slots=2, pool_id="shared-pool")
