"""A task's directory on a laid-out node root, for the node's file tests (test_process makes one without the
node's layout)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiln.compute.node import layout


@pytest.fixture
def paths(node_root: Path) -> layout.TaskPaths:
    paths = layout.task_paths(node_root, "workitems/j1/job-1/t1")
    layout.create_node_layout(node_root)
    layout.create_task_dir(paths)
    return paths
