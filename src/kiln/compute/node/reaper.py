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
from pathlib import Path

PROC = Path("/proc")


def node_processes(node_root: str | os.PathLike[str], proc: Path = PROC, task_dir: str | None = None) -> list[int]:
    """Pids of live processes whose environment says they belong to this node root (and, given one, to
    this task directory: AZ_BATCH_TASK_DIR)."""
    marker = b"AZ_BATCH_NODE_ROOT_DIR=" + os.fsencode(os.path.abspath(node_root))
    task_marker = None if task_dir is None else b"AZ_BATCH_TASK_DIR=" + os.fsencode(task_dir)
    me = os.getpid()
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        variables = environ.split(b"\0")
        if marker in variables and (task_marker is None or task_marker in variables):
            found.append(int(entry.name))
    return found


def kill_node_processes(node_root: str | os.PathLike[str], task_dir: str | None = None) -> list[int]:
    """SIGKILL every process of the node root (or of one task directory in it); returns their pids."""
    pids = node_processes(node_root, task_dir=task_dir)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return pids
