"""Fixtures of the compute tests."""

from __future__ import annotations

import functools
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from kiln.compute.node import identity, runner
from kiln.compute.node.spawner import Spawner
from kiln.compute.protocol import Step
from kiln.testing_fixtures import open_dir

from .helpers import FileServer


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    server = FileServer()
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()
    server.thread.join(5)


@pytest.fixture(autouse=True)
def uid_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test claims task uids in a registry of its own, not the host's (workers inherit it)."""
    registry = tmp_path / "uids"
    monkeypatch.setenv(identity.REGISTRY_ENV, str(registry))
    return registry


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A temporary directory task accounts can pass through (0755): pytest's tmp_path is under a 0700 one."""
    path = open_dir(Path(tempfile.gettempdir()), "kiln-test-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def node_root(open_tmp: Path) -> Path:
    return open_tmp / "node"


@pytest.fixture
def make_step(node_root: Path) -> Callable[..., Step]:
    counter = iter(range(1_000_000))

    def make(command_line: str = "/bin/true", **fields: object) -> Step:
        n = next(counter)
        fields.setdefault("step_id", f"s{n}")
        fields.setdefault("kind", "task")
        fields.setdefault("node_root", str(node_root))
        fields.setdefault("task_dir", f"workitems/j1/job-1/t{n}")
        return Step(command_line=command_line, **fields)  # type: ignore[arg-type]

    return make


@pytest.fixture
async def spawner() -> AsyncIterator[Spawner]:
    """A node's launcher, as the agent has one; closing it kills what it started."""
    spawner = Spawner()
    yield spawner
    await spawner.close()


@pytest.fixture
def run_step(spawner: Spawner) -> Callable[..., object]:
    """runner.run_step with this test's launcher."""
    return functools.partial(runner.run_step, spawner=spawner)
