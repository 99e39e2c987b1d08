"""Files under a node root, for the Batch file API: list, stat, read a range, delete.

The worker runs as root and tasks own directories under the node root, so a path is never checked and then
opened again (a task swapping a symlink in between would have root read any file): each component is
opened relative to its already-opened parent, never following a symlink. Only directories and regular
files are served; a symlink (or a fifo or socket) is not: lists skip it, stat and read answer
FileNotFoundError, and through it no path leads anywhere. Delete removes such an entry itself.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict

from kiln.compute.node.layout import check_relative
from kiln.compute.protocol import FileEntry

#: A directory component: never through a symlink.
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: The file to read: not a symlink; O_NONBLOCK so that opening a fifo a task left does not wait for a writer.
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class DirectoryNotEmpty(IsADirectoryError):
    """A non-empty directory was to be deleted without recursive."""


def components(path: str) -> list[str]:
    """The names along a path that must stay inside its root; ValueError if it is absolute or has `..`."""
    return [name for name in check_relative(path).split("/") if name not in ("", ".")]


def open_in(directory: int, name: str, flags: int) -> int:
    """openat(directory, name) of one component; a symlink there is FileNotFoundError (it is not followed)."""
    try:
        return os.open(name, flags, dir_fd=directory)
    except OSError as exc:
        # O_NOFOLLOW answers ELOOP for a symlink, but with O_DIRECTORY ENOTDIR as for a file: an lstat tells
        # which. A directory by then, or nothing, was a symlink swapped in and out again.
        if exc.errno == errno.ELOOP or (exc.errno == errno.ENOTDIR and not _is_file(directory, name)):
            raise FileNotFoundError(errno.ENOENT, "a symbolic link, which is not followed", name) from None
        raise


def _is_file(directory: int, name: str) -> bool:
    """Neither a symlink nor a directory, nor gone."""
    try:
        mode = os.stat(name, dir_fd=directory, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return False
    return not (stat.S_ISLNK(mode) or stat.S_ISDIR(mode))


@contextmanager
def open_directory(node_root: str, names: list[str]) -> Iterator[int]:
    """A descriptor of node_root/names..., each opened in its parent; node_root itself is Kiln's own."""
    fd = os.open(node_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in names:
            child = open_in(fd, name, _DIRECTORY)
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def served(st: os.stat_result) -> bool:
    return stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)


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
    names = components(path)
    if not names:
        with open_directory(node_root, []) as root:
            return entry(os.path.basename(os.path.normpath(node_root)), os.fstat(root))
    with open_directory(node_root, names[:-1]) as parent:
        st = os.stat(names[-1], dir_fd=parent, follow_symlinks=False)
    if not served(st):
        raise FileNotFoundError(errno.ENOENT, "neither a regular file nor a directory", path)
    return entry(names[-1], st)


def list_files(node_root: str, path: str, recursive: bool) -> list[FileEntry]:
    """Entries of a directory, names relative to it ('/'-separated when recursive): each directory's sorted
    entries, then its subdirectories' in turn."""
    entries: list[FileEntry] = []
    with open_directory(node_root, components(path)) as top:
        subdirectories = _scan(top, "", entries)
        if recursive:
            _walk(top, "", subdirectories, entries)
    return entries


def _walk(directory: int, prefix: str, subdirectories: list[str], entries: list[FileEntry]) -> None:
    """Depth first, each subdirectory opened in its parent; one swapped for a symlink since the scan is skipped."""
    for name in subdirectories:
        try:
            child = open_in(directory, name, _DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):
            continue
        try:
            _walk(child, f"{prefix}{name}/", _scan(child, f"{prefix}{name}/", entries), entries)
        finally:
            os.close(child)


def _scan(directory: int, prefix: str, entries: list[FileEntry]) -> list[str]:
    """Append the directory's served entries (directories first, each kind sorted); its subdirectories' names."""
    with os.scandir(directory) as scan:
        found = []
        for item in scan:
            try:
                found.append((item.name, item.stat(follow_symlinks=False)))
            except FileNotFoundError:  # vanished since the scan
                continue
    found.sort(key=lambda pair: pair[0])
    directories = [(name, st) for name, st in found if stat.S_ISDIR(st.st_mode)]
    regular = [(name, st) for name, st in found if stat.S_ISREG(st.st_mode)]
    entries.extend(entry(f"{prefix}{name}", st) for name, st in directories + regular)
    return [name for name, _ in directories]


def read_file(node_root: str, path: str, start: int = 0, end: int | None = None) -> bytes:
    """Bytes start..end inclusive (end None: to EOF); past EOF reads short."""
    names = components(path)
    if not names:
        raise IsADirectoryError(f"is a directory: {path!r}")
    with open_directory(node_root, names[:-1]) as parent:
        fd = open_in(parent, names[-1], _FILE)
    try:
        kind = os.fstat(fd).st_mode
        if stat.S_ISDIR(kind):
            raise IsADirectoryError(f"is a directory: {path!r}")
        if not stat.S_ISREG(kind):
            raise FileNotFoundError(errno.ENOENT, "neither a regular file nor a directory", path)
        os.lseek(fd, start, os.SEEK_SET)
        with open(fd, "rb", closefd=False) as f:
            return f.read() if end is None else f.read(max(0, end - start + 1))
    finally:
        os.close(fd)


def delete_file(node_root: str, path: str, recursive: bool) -> None:
    """A symlink is removed itself, never what it points to; rmtree with a dir_fd follows none either."""
    names = components(path)
    if not names:
        raise ValueError("the node root itself cannot be deleted")
    with open_directory(node_root, names[:-1]) as parent:
        name = names[-1]
        if not stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
            os.unlink(name, dir_fd=parent)
        elif recursive:
            shutil.rmtree(name, dir_fd=parent)
        else:
            try:
                os.rmdir(name, dir_fd=parent)
            except OSError as exc:
                if exc.errno == errno.ENOTEMPTY:
                    raise DirectoryNotEmpty(f"directory is not empty (use recursive): {path!r}") from None
                raise


def as_message(entries: FileEntry | list[FileEntry]) -> dict | list[dict]:
    if isinstance(entries, FileEntry):
        return asdict(entries)
    return [asdict(e) for e in entries]
