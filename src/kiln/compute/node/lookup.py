"""Finding a command's program as the account that will run it, not as the worker (root).

Root may read and execute almost anything, so `shutil.which` run by the worker would pick a PATH entry the
task's account cannot reach (a program under /root), and the command would then fail to start with
"Permission denied" although a program it may run comes later on PATH. This checks the file and every
directory above it against the account's uid, gid and groups, with the kernel's rules for permission bits
(ACLs aside). Relative PATH entries, and names with a '/', are relative to the working directory, where the
command starts.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from kiln.compute.node.identity import Account


def find_program(argv0: str, path: str, wd: Path, account: Account | None) -> str | None:
    """The file that exec would run for argv0; None when there is none the account may execute."""
    if "/" in argv0:
        candidates = [os.path.join(wd, argv0)]  # an absolute argv0 replaces wd
    else:
        candidates = [os.path.join(wd, entry, argv0) for entry in path.split(os.pathsep) if entry]
    return next((c for c in candidates if _runnable(c, account)), None)


def _runnable(candidate: str, account: Account | None) -> bool:
    if account is None:  # the worker's own account
        return os.path.isfile(candidate) and os.access(candidate, os.X_OK)
    try:
        st = os.stat(candidate)
    except OSError:
        return False
    groups = account.group_ids()
    if not stat.S_ISREG(st.st_mode) or not _executable(st, account.uid, groups):
        return False
    return all(_searchable(parent, account.uid, groups) for parent in _parents(candidate))


def _parents(path: str) -> Iterator[str]:
    """The directories above path, as PurePath.parents names them, without a Path each: every non-admin
    command's program is looked up here."""
    parent = os.path.dirname(path)
    while True:
        yield parent or "."
        above = os.path.dirname(parent)
        if above == parent:
            return
        parent = above


def _searchable(directory: str, uid: int, groups: tuple[int, ...]) -> bool:
    try:
        return _executable(os.stat(directory), uid, groups)
    except OSError:
        return False


def _executable(st: os.stat_result, uid: int, groups: tuple[int, ...]) -> bool:
    """x (search, for a directory) by the owner's bits if the account owns it, else the group's if it is in
    the group, else others'."""
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid in groups:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)
