from __future__ import annotations

import os
import threading
from collections import Counter
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


@pytest.mark.parametrize("bad", ["/etc/passwd", "../x", "workitems/../../x", "./../x", "shared//../x"])
def test_paths_must_stay_in_the_node_root(root: str, bad: str) -> None:
    for op in (
        lambda: files.stat_file(root, bad),
        lambda: files.list_files(root, bad, True),
        lambda: files.read_file(root, bad),
        lambda: files.delete_file(root, bad, True),
    ):
        with pytest.raises(ValueError):
            op()


@pytest.fixture
def outside(open_tmp: Path) -> Path:
    """A directory beside the node root with a secret in it."""
    path = open_tmp / "outside"
    path.mkdir()
    (path / "secret").write_bytes(b"SECRET")
    return path


def test_a_symlink_cannot_lead_out(root: str, outside: Path) -> None:
    (Path(root) / "shared/out").symlink_to(outside)
    (Path(root) / "shared/secret").symlink_to(outside / "secret")
    for path in ("shared/out", "shared/out/secret", "shared/secret"):
        for op in (files.stat_file, files.read_file):
            with pytest.raises(FileNotFoundError):
                op(root, path)
    with pytest.raises(FileNotFoundError):
        files.list_files(root, "shared/out", False)
    assert files.list_files(root, "shared", True) == []


def test_symlinks_inside_the_root_are_not_followed_either(root: str) -> None:
    """A symlink is not served wherever it points: listed nowhere, 404 to stat and read; delete removes the link."""
    wd = Path(root) / "workitems/j1/job-1/t1/wd"
    (wd / "link.bin").symlink_to("sub/data.bin")
    (wd / "linkdir").symlink_to("sub")
    assert [e.name for e in files.list_files(root, "workitems/j1/job-1/t1/wd", True)] == ["sub", "sub/data.bin"]
    for path in ("link.bin", "linkdir", "linkdir/data.bin"):
        with pytest.raises(FileNotFoundError):
            files.stat_file(root, f"workitems/j1/job-1/t1/wd/{path}")
        with pytest.raises(FileNotFoundError):
            files.read_file(root, f"workitems/j1/job-1/t1/wd/{path}")
    files.delete_file(root, "workitems/j1/job-1/t1/wd/link.bin", False)
    files.delete_file(root, "workitems/j1/job-1/t1/wd/linkdir", True)
    assert not (wd / "link.bin").is_symlink() and not (wd / "linkdir").is_symlink()
    assert (wd / "sub/data.bin").read_bytes() == b"xyz"


def test_a_recursive_delete_does_not_follow_symlinks_out(root: str, outside: Path) -> None:
    (Path(root) / "shared/dir").mkdir()
    (Path(root) / "shared/dir/out").symlink_to(outside)
    files.delete_file(root, "shared/dir", True)
    assert not (Path(root) / "shared/dir").exists() and (outside / "secret").read_bytes() == b"SECRET"


def test_a_fifo_is_neither_listed_nor_waited_on(root: str) -> None:
    os.mkfifo(Path(root) / "shared/fifo")
    assert files.list_files(root, "shared", False) == []
    with pytest.raises(FileNotFoundError):
        files.read_file(root, "shared/fifo")
    with pytest.raises(FileNotFoundError):
        files.stat_file(root, "shared/fifo")


def test_a_swapped_symlink_never_reads_outside(root: str, outside: Path) -> None:
    """The race the old check-then-open lost: a thread swaps a file and a directory for symlinks out of the
    root while 10,000 reads go on; every read answers the real bytes or not found (no other error: the API
    would answer 409), never the secret."""
    wd = Path(root) / "workitems/j1/job-1/t1/wd"
    (wd / "good").write_bytes(b"GOOD")
    (wd / "d").mkdir()
    (wd / "d/secret").write_bytes(b"GOOD")
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():
            os.link(wd / "good", wd / "staged")
            os.replace(wd / "staged", wd / "x")
            os.symlink(outside / "secret", wd / "staged")
            os.replace(wd / "staged", wd / "x")
            os.rename(wd / "d", wd / "d.real")
            os.symlink(outside, wd / "d")
            os.unlink(wd / "d")
            os.rename(wd / "d.real", wd / "d")

    swapper = threading.Thread(target=swap)
    swapper.start()
    answers: Counter[bytes | None] = Counter()
    try:
        for path in ["workitems/j1/job-1/t1/wd/x", "workitems/j1/job-1/t1/wd/d/secret"] * 5_000:
            try:
                answers[files.read_file(root, path)] += 1
            except FileNotFoundError:  # swapped for a symlink, or between names
                answers[None] += 1
    finally:
        stop.set()
        swapper.join()
    assert answers[b"SECRET"] == 0 and answers[b"GOOD"] > 0, answers


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
