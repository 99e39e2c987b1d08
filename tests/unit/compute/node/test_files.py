from __future__ import annotations

from pathlib import Path

import pytest

from kiln.compute.node import files, layout


@pytest.fixture
def root(node_root: Path) -> str:
    layout.create_node_layout(node_root)
    task = node_root / "workitems/j1/job-1/t1"
    (task / "wd/sub").mkdir(parents=True)
    (task / "stdout.txt").write_bytes(b"0123456789")
    (task / "stderr.txt").write_bytes(b"")
    (task / "wd/sub/data.bin").write_bytes(b"xyz")
    return str(node_root)


def test_list_the_node_root(root: str) -> None:
    names = [(e.name, e.is_directory) for e in files.list_files(root, "", False)]
    assert names == [(n, True) for n in layout.NODE_DIRS]


def test_list_a_task_dir_recursively(root: str) -> None:
    entries = files.list_files(root, "workitems/j1/job-1/t1", True)
    assert [(e.name, e.is_directory, e.size) for e in entries] == [
        ("wd", True, 0),
        ("stderr.txt", False, 0),
        ("stdout.txt", False, 10),
        ("wd/sub", True, 0),
        ("wd/sub/data.bin", False, 3),
    ]
    flat = files.list_files(root, "workitems/j1/job-1/t1", False)
    assert [e.name for e in flat] == ["wd", "stderr.txt", "stdout.txt"]


def test_stat(root: str) -> None:
    entry = files.stat_file(root, "workitems/j1/job-1/t1/stdout.txt")
    assert (entry.name, entry.is_directory, entry.size, entry.mode & 0o777 != 0) == ("stdout.txt", False, 10, True)
    assert entry.mtime > 0 and entry.ctime > 0
    assert files.stat_file(root, "workitems").is_directory


def test_read_ranges_are_inclusive(root: str) -> None:
    path = "workitems/j1/job-1/t1/stdout.txt"
    assert files.read_file(root, path) == b"0123456789"
    assert files.read_file(root, path, 2, 4) == b"234"
    assert files.read_file(root, path, 8) == b"89"
    assert files.read_file(root, path, 8, 100) == b"89"


def test_missing_things(root: str) -> None:
    with pytest.raises(FileNotFoundError):
        files.stat_file(root, "nope")
    with pytest.raises(FileNotFoundError):
        files.list_files(root, "nope", False)
    with pytest.raises(FileNotFoundError):
        files.read_file(root, "nope")
    with pytest.raises(FileNotFoundError):
        files.delete_file(root, "nope", False)
    with pytest.raises(NotADirectoryError):
        files.list_files(root, "workitems/j1/job-1/t1/stdout.txt", False)
    with pytest.raises(IsADirectoryError):
        files.read_file(root, "workitems")


@pytest.mark.parametrize("bad", ["/etc/passwd", "../x", "workitems/../../x"])
def test_paths_must_stay_in_the_node_root(root: str, bad: str) -> None:
    for op in (
        lambda: files.stat_file(root, bad),
        lambda: files.list_files(root, bad, True),
        lambda: files.read_file(root, bad),
        lambda: files.delete_file(root, bad, True),
    ):
        with pytest.raises(ValueError):
            op()


def test_a_symlink_cannot_lead_out(root: str, tmp_path: Path) -> None:
    (Path(root) / "shared/out").symlink_to(tmp_path)
    with pytest.raises(ValueError):
        files.list_files(root, "shared/out", False)


def test_delete(root: str) -> None:
    task = "workitems/j1/job-1/t1"
    files.delete_file(root, f"{task}/stdout.txt", False)
    with pytest.raises(files.DirectoryNotEmpty):
        files.delete_file(root, f"{task}/wd", False)
    files.delete_file(root, f"{task}/wd", True)
    files.delete_file(root, "applications", False)  # empty
    assert [e.name for e in files.list_files(root, task, True)] == ["stderr.txt"]
    with pytest.raises(ValueError):
        files.delete_file(root, "", True)
