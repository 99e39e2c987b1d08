"""Files under a node root, for the Batch file API: list, stat, read a range, delete."""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import asdict
from pathlib import Path

from kiln.compute.node.layout import relative_path
from kiln.compute.protocol import FileEntry


class DirectoryNotEmpty(IsADirectoryError):
    """A non-empty directory was to be deleted without recursive."""


def resolve(node_root: str, path: str) -> Path:
    """The absolute path of `path` under node_root; ValueError if it leaves the root (even via symlinks)."""
    root = os.path.realpath(node_root)
    target = Path(root) / relative_path(path)
    if os.path.commonpath([root, os.path.realpath(target)]) != root:
        raise ValueError(f"path leaves the node root: {path!r}")
    return target


def entry(name: str, st: os.stat_result) -> FileEntry:
    """mode is the full st_mode (type and permission bits)."""
    directory = stat.S_ISDIR(st.st_mode)
    return FileEntry(
        name=name,
        is_directory=directory,
        size=0 if directory else st.st_size,
        mtime=st.st_mtime,
        ctime=st.st_ctime,
        mode=st.st_mode,
    )


def stat_file(node_root: str, path: str) -> FileEntry:
    target = resolve(node_root, path)
    return entry(target.name, target.stat())


def list_files(node_root: str, path: str, recursive: bool) -> list[FileEntry]:
    """Entries of a directory, names relative to it ('/'-separated when recursive), sorted."""
    base = resolve(node_root, path)
    if not base.is_dir():
        if not base.exists():
            raise FileNotFoundError(f"no such directory: {path!r}")
        raise NotADirectoryError(f"not a directory: {path!r}")
    entries = []
    for dirpath, dirnames, filenames in os.walk(base):
        rel = os.path.relpath(dirpath, base)
        for name in sorted(dirnames) + sorted(filenames):
            full = os.path.join(dirpath, name)
            try:
                st = os.stat(full)
            except OSError:  # vanished, or a dangling symlink
                continue
            entries.append(entry(name if rel == "." else f"{rel}/{name}".replace(os.sep, "/"), st))
        if not recursive:
            break
    return entries


def read_file(node_root: str, path: str, start: int = 0, end: int | None = None) -> bytes:
    """Bytes start..end inclusive (end None: to EOF); past EOF reads short."""
    target = resolve(node_root, path)
    if target.is_dir():
        raise IsADirectoryError(f"is a directory: {path!r}")
    with open(target, "rb") as f:
        f.seek(start)
        return f.read() if end is None else f.read(max(0, end - start + 1))


def delete_file(node_root: str, path: str, recursive: bool) -> None:
    target = resolve(node_root, path)
    if target == Path(os.path.realpath(node_root)):
        raise ValueError("the node root itself cannot be deleted")
    if target.is_symlink() or not target.is_dir():
        target.unlink()
    elif recursive:
        shutil.rmtree(target)
    elif any(target.iterdir()):
        raise DirectoryNotEmpty(f"directory is not empty (use recursive): {path!r}")
    else:
        target.rmdir()


def as_message(entries: FileEntry | list[FileEntry]) -> dict | list[dict]:
    if isinstance(entries, FileEntry):
        return asdict(entries)
    return [asdict(e) for e in entries]
