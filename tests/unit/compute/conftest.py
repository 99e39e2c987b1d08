"""Fixtures of the compute tests."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kiln.compute.protocol import Step

from .helpers import FileServer


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    server = FileServer()
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()
    server.thread.join(5)


@pytest.fixture
def node_root(tmp_path: Path) -> Path:
    return tmp_path / "node"


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
