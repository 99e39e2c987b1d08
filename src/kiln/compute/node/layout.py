"""Where things live on a node: the Azure Linux node-root layout and a step's task directory."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from kiln.compute.node import identity

#: Directories under the node root, as on an Azure Batch Linux node (/mnt/batch/tasks).
NODE_DIRS = ("applications", "fsmounts", "shared", "startup", "volatile", "workitems")

#: Modes when steps run under task accounts (the worker is root); the rest are 0755. The root is the node
#: group's (identity.node_gid): accounts of other nodes cannot pass through it. Tasks may write only shared/
#: (through the node group; setgid keeps new files in it); volatile/ holds the agent's state, download URLs
#: with their SAS tokens among it.
ROOT_MODE = 0o750
SECURE_MODES = {"shared": 0o2770, "volatile": 0o700}

#: Kiln's own per-node state (resource-file progress), kept where Azure keeps its agent state.
STATE_DIR = "volatile/kiln"


@dataclass(frozen=True, slots=True)
class TaskPaths:
    """The absolute paths one step uses; the task directory is the parent of wd."""

    node_root: Path
    task_dir: Path
    wd: Path
    stdout: Path
    stderr: Path

    @property
    def shared(self) -> Path:
        return self.node_root / "shared"

    @property
    def startup(self) -> Path:
        return self.node_root / "startup"

    @property
    def mounts(self) -> Path:
        return self.node_root / "fsmounts"


def root_path(node_root: str) -> Path:
    """node_root made absolute; an absolute one is parsed once, and every step of the node shares the Path
    (its str and hash are then computed once too)."""
    return _parsed(node_root) if os.path.isabs(node_root) else Path(node_root).absolute()


@functools.lru_cache(maxsize=64)
def _parsed(path: str) -> Path:
    return Path(path)


def check_relative(path: str) -> str:
    """path, if it stays inside its root: relative and free of `..` (checked on the string: it is
    what PurePosixPath would parse into parts, without the parse)."""
    if path.startswith("/") or ".." in path.split("/"):
        raise ValueError(f"path must be relative and must not contain '..': {path!r}")
    return path


def relative_path(path: str) -> PurePosixPath:
    """Parse a path that must stay inside its root: relative and free of `..`."""
    return PurePosixPath(check_relative(path))


def task_paths(node_root: str | os.PathLike[str], task_dir: str) -> TaskPaths:
    """Every step makes one: the task directory is parsed once (not as a PurePosixPath first)."""
    root = root_path(os.fspath(node_root))
    directory = root / check_relative(task_dir)
    return TaskPaths(
        node_root=root,
        task_dir=directory,
        wd=directory / "wd",
        stdout=directory / "stdout.txt",
        stderr=directory / "stderr.txt",
    )


def create_node_layout(node_root: str | os.PathLike[str]) -> Path:
    """Create the node root and its standard directories (idempotent)."""
    root = Path(node_root).absolute()
    for name in NODE_DIRS:
        (root / name).mkdir(parents=True, exist_ok=True)
    if identity.isolating():
        secure_node_layout(root)
    return root


def secure_node_layout(root: Path) -> None:
    """Root owns everything; only the node's accounts may enter the root, and only they may write shared/
    (explicit modes, whatever the umask)."""
    group = identity.node_gid(root)
    os.chown(root, 0, group)
    os.chmod(root, ROOT_MODE)
    for name in NODE_DIRS:
        os.chown(root / name, 0, group if name == "shared" else 0)
        os.chmod(root / name, SECURE_MODES.get(name, 0o755))


def ensure_node_layout(node_root: Path) -> None:
    """create_node_layout unless already there: one stat on the hot path instead of six mkdirs."""
    if not os.path.isdir(os.path.join(node_root, "workitems")):
        create_node_layout(node_root)


def create_task_dir(paths: TaskPaths) -> bool:
    """Create the task directory with wd/ inside, 0700: they are the task account's alone (identity); a
    retry reuses them (idempotent). The job's directory is usually there already: two mkdirs, not
    mkdir(parents=True)'s failed one first.

    True when both were made now: nobody but the worker has had them yet."""
    fresh = True
    for directory in (paths.task_dir, paths.wd):
        try:
            os.mkdir(directory, identity.PRIVATE_DIR_MODE)
        except FileNotFoundError:
            directory.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(directory, identity.PRIVATE_DIR_MODE)
        except FileExistsError:
            if not os.path.isdir(directory):
                raise
            fresh = False
    return fresh


def state_dir(node_root: str | os.PathLike[str]) -> Path:
    return Path(node_root).absolute() / STATE_DIR
