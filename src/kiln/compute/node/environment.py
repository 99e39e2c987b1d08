"""The process environment of a step: a minimal base, the user's variables, then AZ_BATCH_*."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping

from kiln.compute.node.identity import Account, isolating, login_environment
from kiln.compute.node.layout import TaskPaths, task_paths
from kiln.compute.protocol import Step

#: Variables taken over from the worker's own environment, when set there.
BASE_VARS = (
    "PATH",
    "HOME",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "USER",
    "LOGNAME",
    "SHELL",
    "TERM",
)
#: A step's PATH when the worker runs as root (or has none): the system's directories. Root's own PATH is not
#: a task's: its entries under /root are out of the task accounts' reach, and a task run as root must not
#: depend on how the operator's shell was set up. A task sets its own in environmentSettings.
TASK_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Kinds that see the job preparation task's directories (when the job has one).
SEES_PREP_DIR = ("task", "release")


def base_environment(host_env: Mapping[str, str]) -> dict[str, str]:
    """The worker's variables a step keeps; PATH only when the worker is not root (steps run as its user)."""
    env = {name: value for name in BASE_VARS if (value := host_env.get(name)) is not None}
    if isolating() or "PATH" not in env:
        env["PATH"] = TASK_PATH
    return env


@functools.cache
def _worker_base() -> dict[str, str]:
    """base_environment of the worker's own environment, which does not change while it runs (read once:
    os.environ decodes each variable on every read)."""
    return base_environment(os.environ)


def batch_variables(step: Step, paths: TaskPaths) -> dict[str, str]:
    """The AZ_BATCH_* variables: the step's identity, then the node's directories."""
    variables = dict(step.batch_context)
    variables.update(node_variables(paths))
    variables.update(
        {
            "AZ_BATCH_TASK_DIR": str(paths.task_dir),
            "AZ_BATCH_TASK_WORKING_DIR": str(paths.wd),
            "AZ_BATCH_TASK_RESERVED_EPHEMERAL_DISK_SPACE_BYTES": "0",
        }
    )
    if "AZ_BATCH_IS_CURRENT_NODE_MASTER" in variables:  # an instance of a multi-instance task
        variables["AZ_BATCH_TASK_SHARED_DIR"] = str(paths.task_dir)
    if step.prep_task_dir is not None and step.kind in SEES_PREP_DIR:
        prep = task_paths(paths.node_root, step.prep_task_dir)
        variables["AZ_BATCH_JOB_PREP_DIR"] = str(prep.task_dir)
        variables["AZ_BATCH_JOB_PREP_WORKING_DIR"] = str(prep.wd)
    return variables


#: node_variables by node root: a worker serves one node root, or a few.
_node_variables: dict[str, dict[str, str]] = {}


def node_variables(paths: TaskPaths) -> dict[str, str]:
    """The node's directories: the same for every step of the node, so made once."""
    variables = _node_variables.get(str(paths.node_root))
    if variables is None:
        variables = _node_variables[str(paths.node_root)] = {
            "AZ_BATCH_NODE_ROOT_DIR": str(paths.node_root),
            "AZ_BATCH_NODE_SHARED_DIR": str(paths.shared),
            "AZ_BATCH_NODE_STARTUP_DIR": str(paths.startup),
            "AZ_BATCH_NODE_MOUNTS_DIR": str(paths.mounts),
        }
    return variables


def build_environment(
    step: Step, paths: TaskPaths, host_env: Mapping[str, str] | None = None, account: Account | None = None
) -> dict[str, str]:
    """Merge in Batch's order; AZ_BATCH_* last so a user variable cannot fake the node's identity.

    A step run as a task account, or as an admin named user account (root underneath), gets that account's
    HOME/USER/LOGNAME, not the worker's.
    """
    env = dict(_worker_base()) if host_env is None else base_environment(host_env)
    if account is not None:
        env.update(account.login_environment(paths.wd))
    elif step.scope == "user" and step.user:
        env.update(login_environment(step.user["name"], paths.wd))
    env.update(step.environment)
    env.update(batch_variables(step, paths))
    return env
