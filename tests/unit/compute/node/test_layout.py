from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from kiln.compute.node import identity, layout


def test_node_layout_has_the_azure_linux_directories(tmp_path: Path) -> None:
    root = layout.create_node_layout(tmp_path / "node")
    assert sorted(p.name for p in root.iterdir()) == [
        "applications",
        "fsmounts",
        "shared",
        "startup",
        "volatile",
        "workitems",
    ]
    layout.create_node_layout(root)  # idempotent


@pytest.mark.skipif(os.geteuid() != 0, reason="node dirs are secured only when the worker is root")
def test_only_the_nodes_accounts_enter_its_root_and_only_shared_is_writable_by_them(tmp_path: Path) -> None:
    umask = os.umask(0o077)  # explicit modes, whatever the worker's umask
    try:
        root = layout.create_node_layout(tmp_path / "node")
    finally:
        os.umask(umask)
    modes = {
        p.name: (p.stat().st_uid, p.stat().st_gid, stat.S_IMODE(p.stat().st_mode)) for p in [root, *root.iterdir()]
    }
    group = identity.node_gid(root)
    assert identity.is_task_uid(group)  # claimed from the uid registry: no account's own group
    assert modes == {
        "node": (0, group, 0o750),
        "applications": (0, 0, 0o755),
        "fsmounts": (0, 0, 0o755),
        "shared": (0, group, 0o2770),
        "startup": (0, 0, 0o755),
        "volatile": (0, 0, 0o700),
        "workitems": (0, 0, 0o755),
    }


def test_task_paths_put_the_output_files_beside_wd(tmp_path: Path) -> None:
    paths = layout.task_paths(tmp_path, "workitems/j1/job-1/t1")
    assert paths.task_dir == tmp_path / "workitems/j1/job-1/t1"
    assert paths.wd == paths.task_dir / "wd"
    assert paths.stdout == paths.task_dir / "stdout.txt"
    assert paths.stderr == paths.task_dir / "stderr.txt"
    assert layout.create_task_dir(paths) is True  # made now: the worker's alone
    assert layout.create_task_dir(paths) is False  # a retry reuses the directory
    assert paths.wd.is_dir()


def test_a_task_directory_is_not_fresh_when_only_wd_is_new(tmp_path: Path) -> None:
    paths = layout.task_paths(tmp_path, "workitems/j1/job-1/t1")
    paths.task_dir.mkdir(parents=True)
    assert layout.create_task_dir(paths) is False


@pytest.mark.parametrize("bad", ["/etc", "//etc", "../x", "workitems/../../x", "a/./..", "a//../b"])
def test_task_dir_must_stay_under_the_node_root(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError):
        layout.task_paths(tmp_path, bad)


@pytest.mark.parametrize("good", ["workitems/j1/job-1/t1", "a//b", "./a", "a/..b/c", ""])
def test_relative_paths_match_what_pathlib_parses(tmp_path: Path, good: str) -> None:
    assert layout.task_paths(tmp_path, good).task_dir == tmp_path / good
