"""Find and kill a node's processes that outlived their agent.

Commands run in their own sessions. The launcher kills them when its worker dies, but a crash
that takes the launcher too (SIGKILL of the whole process group) leaves them running. Every
command's environment names its node root (AZ_BATCH_NODE_ROOT_DIR), which identifies them in
/proc even after they have been reparented. PR_SET_PDEATHSIG is not used: it would cover
only the direct child, not its children.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

PROC = Path("/proc")


ROOT_VARIABLE = b"AZ_BATCH_NODE_ROOT_DIR="


def _environments(proc: Path = PROC) -> Iterator[tuple[int, list[bytes]]]:
    """(pid, environment variables) of every live process but this one that we may read."""
    me = os.getpid()
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        variables = _environment(entry)
        if variables is not None:
            yield int(entry.name), variables


def _environment(entry: Path) -> list[bytes] | None:
    try:
        return (entry / "environ").read_bytes().split(b"\0")
    except OSError:  # gone, or not ours to read
        return None


def node_processes(node_root: str | os.PathLike[str], proc: Path = PROC, task_dir: str | None = None) -> list[int]:
    """Pids of live processes whose environment says they belong to this node root (and, given one, to
    this task directory: AZ_BATCH_TASK_DIR)."""
    marker = ROOT_VARIABLE + os.fsencode(os.path.abspath(node_root))
    task_marker = None if task_dir is None else b"AZ_BATCH_TASK_DIR=" + os.fsencode(task_dir)
    return [
        pid
        for pid, variables in _environments(proc)
        if marker in variables and (task_marker is None or task_marker in variables)
    ]


def processes_by_node_root(proc: Path = PROC) -> dict[str, list[int]]:
    """Every live process of any node, by node root: one scan for a host that starts many nodes."""
    found: dict[str, list[int]] = {}
    for pid, variables in _environments(proc):
        for variable in variables:
            if variable.startswith(ROOT_VARIABLE):
                found.setdefault(os.fsdecode(variable[len(ROOT_VARIABLE) :]), []).append(pid)
    return found


def kill_pids_of(node_root: str | os.PathLike[str], pids: list[int], proc: Path = PROC) -> list[int]:
    """SIGKILL those of pids (found by processes_by_node_root) that still belong to the node root (a pid may
    have been reused since); returns the pids killed."""
    marker = ROOT_VARIABLE + os.fsencode(os.path.abspath(node_root))
    killed = [pid for pid in pids if marker in (_environment(proc / str(pid)) or ())]
    _kill(killed)
    return killed


def kill_node_processes(node_root: str | os.PathLike[str], task_dir: str | None = None) -> list[int]:
    """SIGKILL every process of the node root (or of one task directory in it); returns their pids."""
    pids = node_processes(node_root, task_dir=task_dir)
    _kill(pids)
    return pids


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
