from __future__ import annotations

from pathlib import Path

import pytest

from kiln.compute.node import layout


def test_node_layout_has_the_azure_linux_directories(tmp_path: Path) -> None:
    root = layout.create_node_layout(tmp_path / "node")
    assert sorted(p.name for p in root.iterdir()) == [
        "applications", "fsmounts", "shared", "startup", "volatile", "workitems"]
    layout.create_node_layout(root)  # idempotent


def test_task_paths_put_the_output_files_beside_wd(tmp_path: Path) -> None:
    paths = layout.task_paths(tmp_path, "workitems/j1/job-1/t1")
    assert paths.task_dir == tmp_path / "workitems/j1/job-1/t1"
    assert paths.wd == paths.task_dir / "wd"
    assert paths.stdout == paths.task_dir / "stdout.txt"
    assert paths.stderr == paths.task_dir / "stderr.txt"
    layout.create_task_dir(paths)
    layout.create_task_dir(paths)  # a retry reuses the directory
    assert paths.wd.is_dir()


@pytest.mark.parametrize("bad", ["/etc", "../x", "workitems/../../x"])
def test_task_dir_must_stay_under_the_node_root(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError):
        layout.task_paths(tmp_path, bad)
