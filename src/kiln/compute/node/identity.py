"""Who a step's command runs as: admin steps as root, non-admin steps as unprivileged accounts.

Only when the worker runs as root. A worker that is not root cannot switch accounts, so it runs every
step as its own user, as before, whatever the elevation level (isolating() is False).

The accounts are numeric: setuid and setgid need no passwd entry. Which one, by autoUser scope:

- pool (Azure's default): one account per node, shared by every non-admin pool-scope step there,
  so a job's tasks read what its preparation task left and its release task can delete it.
- task: an account per task directory, so no other task can read or write the task's directory.
- a named user account of the pool (userIdentity.username): one account per node and name, with the
  pool's uid and gid when it gives them (linuxUserConfiguration), USER and LOGNAME its name; an admin
  one runs as root.

A uid's first choice is a hash of its owner (the node root for pool scope; node root and task dir
for task scope) into UID_FIRST..UID_FIRST+UID_COUNT-1; a uid that already belongs to another live
owner is skipped (the next one is tried). Claims are recorded host-wide, in a registry of symlinks
<uid> -> owner directory (REGISTRY_ENV, default DEFAULT_REGISTRY), because the uid space is shared by
every node root and data dir on the host. A claim whose directory is gone is stale and is taken
over. A task-scope retry or restart finds its uid again (the task directory's owner), so it can
reuse its files.

Nodes share one host here, where Azure gives each a machine of its own, so the file modes keep them apart:

- gid: the uid, a private group: what the account makes is its own.
- the node's group (node_gid, a number claimed from the same registry, so no account has it as its own
  gid): every account of the node, and no other, is in it. The node root is root:node group 0750, so
  accounts of other nodes cannot even pass through it; shared/ is the node group's (2770, setgid, no
  sticky bit), and with umask 007 what one account makes there the node's other accounts may read,
  change and delete, and nobody else may read.
- the task directory and wd are handed to the account before the command starts, 0700: only that
  account (and root) can enter them. Pool-scope steps share one account, so a job's tasks read the
  preparation task's files; a task-scope task's files are its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import itertools
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.compute.node.failures import SERVER_ERROR, USER_ERROR, StepFailure

if TYPE_CHECKING:
    from kiln.compute.node.layout import TaskPaths
    from kiln.compute.protocol import ResourceFile, Step

#: uids of task accounts (each also a private gid): above what distributions hand out to people.
UID_FIRST, UID_COUNT = 200_000, 100_000
#: umask of non-admin commands: nothing for others; group-writable for the node's group in shared/ (elsewhere the
#: group is the account's own).
TASK_UMASK = 0o007
#: Where the host-wide uid claims live; overridable (tests keep theirs apart).
REGISTRY_ENV = "KILN_UID_REGISTRY"
DEFAULT_REGISTRY = "/var/lib/kiln/uids"


def isolating() -> bool:
    """Non-admin steps get accounts of their own only when the worker can switch to them."""
    return os.geteuid() == 0


@dataclass(frozen=True, slots=True)
class Account:
    """An unprivileged task account: numeric, without a passwd entry."""

    uid: int
    gid: int
    user_name: str | None = None  #: a named user account's name; auto-users are kiln-<uid>
    #: one account for many steps of the node (pool-scope auto-user, named user account), not one task's:
    #: its commands are started by a launcher of its own that runs as it (see launcher.py)
    node_wide: bool = False
    #: supplementary groups: the node's group (node_gid), which opens the node root and shared/
    groups: tuple[int, ...] = ()

    @property
    def name(self) -> str:
        return self.user_name or f"kiln-{self.uid}"

    def login_environment(self, wd: Path) -> dict[str, str]:
        return login_environment(self.name, wd)

    def group_ids(self) -> tuple[int, ...]:
        """Its own group and its supplementary groups (the node's)."""
        return (self.gid, *self.groups)

    def launch_options(self) -> dict[str, Any]:
        """What the launcher switches to in the child before exec: groups, gid, uid and umask."""
        return {"uid": self.uid, "gid": self.gid, "groups": list(self.groups), "umask": TASK_UMASK}


def login_environment(name: str, wd: Path) -> dict[str, str]:
    """HOME is the working directory: the account has no home of its own."""
    return {"HOME": str(wd), "USER": name, "LOGNAME": name}


def registry_dir() -> Path:
    return Path(os.environ.get(REGISTRY_ENV) or DEFAULT_REGISTRY)


#: Marks a node-wide account's claim: "<node root>#kiln-account:<account>"; the node root must exist.
ACCOUNT_MARK = "#kiln-account:"


def preferred_uid(paths: TaskPaths, scope: str = "task", name: str = "") -> int:
    """Deterministic first choice: an owner gets the same uid again even if its claim was lost."""
    owner = str(paths.task_dir.relative_to(paths.node_root)) if scope == "task" else name
    key = os.fsencode(f"{paths.node_root}\0{scope}\0{owner}")
    return UID_FIRST + int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % UID_COUNT


def is_task_uid(uid: int) -> bool:
    return UID_FIRST <= uid < UID_FIRST + UID_COUNT


@contextlib.contextmanager
def _registry_lock(registry: Path) -> Iterator[None]:
    """One claim at a time across every worker process of the host."""
    registry.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(registry / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def claim_uid(owner: str, preferred: int, current: int | None = None) -> int:
    """owner's uid (a task directory, or a node-wide account's ACCOUNT_MARK claim): current if still its
    own, else the first free one from preferred."""
    registry, target = registry_dir(), owner
    start = preferred - UID_FIRST
    probe = (UID_FIRST + (start + i) % UID_COUNT for i in range(UID_COUNT))
    with _registry_lock(registry):
        for uid in itertools.chain([current] if current is not None and is_task_uid(current) else [], probe):
            entry = registry / str(uid)
            try:
                claimed: str | None = os.readlink(entry)
            except FileNotFoundError:
                claimed = None
            if claimed == target:
                return uid
            if claimed is None or not os.path.lexists(claimed.partition(ACCOUNT_MARK)[0]):  # free, or owner gone
                entry.unlink(missing_ok=True)
                os.symlink(target, entry)
                return uid
    raise StepFailure.of(
        SERVER_ERROR, "TaskAccountUnavailable", f"All {UID_COUNT} task account uids are in use on this host."
    )


#: Node-wide accounts' uids this process has claimed, by (registry, node root, scope, name). A claim stays
#: its owner's while the owner's node root exists, and a node root is wiped or removed only with its
#: worker stopped: steps need not take the registry's lock again.
_node_uids: dict[tuple[str, str, str, str], int] = {}


def _node_uid_key(paths: TaskPaths, scope: str, name: str) -> tuple[str, str, str, str]:
    return os.environ.get(REGISTRY_ENV, ""), str(paths.node_root), scope, name


def node_account_uid(paths: TaskPaths, scope: str, name: str = "") -> int:
    """A node-wide account: the pool-scope auto-user, or a named user account of the pool."""
    key = _node_uid_key(paths, scope, name)
    uid = _node_uids.get(key)
    if uid is None:
        owner = f"{paths.node_root}{ACCOUNT_MARK}{scope}:{name}"
        uid = _node_uids[key] = claim_uid(owner, preferred_uid(paths, scope, name))
    return uid


def node_gid(node_root: Path) -> int:
    """The node's group: claimed like a node-wide account, so it is nobody's private gid; kept while the node
    root exists."""
    key = os.environ.get(REGISTRY_ENV, ""), str(node_root), "node", ""
    gid = _node_uids.get(key)
    if gid is None:
        owner = f"{node_root}{ACCOUNT_MARK}node:"
        first = UID_FIRST + int.from_bytes(hashlib.sha256(os.fsencode(owner)).digest()[:8], "big") % UID_COUNT
        gid = _node_uids[key] = claim_uid(owner, first)
    return gid


def task_uid(paths: TaskPaths) -> int:
    """The task directory's own account (task scope): the one it has if still its own."""
    return claim_uid(str(paths.task_dir), preferred_uid(paths, "task"), os.lstat(paths.task_dir).st_uid)


def claims_uid(step: Step, paths: TaskPaths) -> bool:
    """Whether prepare() takes a uid from the host-wide registry, under its lock (worth a thread): for
    every task-scope step, and for a node-wide account the first time only."""
    if step.user_missing or not needs_account(step):
        return False
    if step.scope == "task":
        return True
    user = step.user or {}
    if step.scope == "user" and user.get("uid") is not None:
        return False
    return _node_uid_key(paths, step.scope, user.get("name", "")) not in _node_uids


def account_of(step: Step, paths: TaskPaths) -> Account:
    groups = (node_gid(paths.node_root),)
    if step.scope == "user":
        user = step.user or {}
        if user.get("uid") is not None:  # the pool gave it fixed ids (linuxUserConfiguration)
            return Account(user["uid"], user["gid"], user["name"], node_wide=True, groups=groups)
        uid = node_account_uid(paths, "user", user["name"])
        return Account(uid, uid, user["name"], node_wide=True, groups=groups)
    if step.scope == "pool":
        uid = node_account_uid(paths, "pool")
        return Account(uid, uid, node_wide=True, groups=groups)
    uid = task_uid(paths)
    return Account(uid, uid, groups=groups)


def closed(directory: str | Path) -> bool:
    """Other accounts cannot pass through it (no o+x)."""
    return not os.stat(directory).st_mode & stat.S_IXOTH


def unreachable_parent(path: Path) -> Path | None:
    """The first directory above path that other accounts cannot pass through, if any."""
    return next(filter(closed, path.parents), None)


#: Node roots this process found reachable, with every directory above them: those are the operator's.
_open_roots: set[Path] = set()
#: Directories inside node roots (a job's, made by Kiln) this process found open to other accounts, at
#: most OPEN_DIRS_KEPT of them.
_open_dirs: set[str] = set()
OPEN_DIRS_KEPT = 4096


def blocked_parent(paths: TaskPaths) -> Path | None:
    """unreachable_parent of the task directory, each directory looked at until it is found open: the
    job's directories are Kiln's (root's, 0755 unless the worker's umask closes them), what is above the
    node root the operator's; the node root is closed to all but its node's group (layout.secure_node_layout).
    Every step of a job would otherwise stat the same three."""
    root, directory = str(paths.node_root), os.path.dirname(paths.task_dir)
    while len(directory) > len(root):  # its ancestors inside the node root (layout.check_relative)
        if directory in _open_dirs:
            break
        if closed(directory):
            return Path(directory)
        if len(_open_dirs) >= OPEN_DIRS_KEPT:  # a job's directories go with the job
            _open_dirs.clear()
        _open_dirs.add(directory)
        directory = os.path.dirname(directory)
    if paths.node_root in _open_roots:
        return None
    blocked = unreachable_parent(paths.node_root)
    if blocked is None:
        _open_roots.add(paths.node_root)
    return blocked


#: A handed-over directory: the account's alone.
PRIVATE_DIR_MODE = 0o700


def private(mode: int) -> int:
    """A handed-over file: its owner's and its group's bits (the group is the account's own), none for others,
    no set-id bits."""
    return stat.S_IMODE(mode) & ~(stat.S_IRWXO | stat.S_ISUID | stat.S_ISGID)


def hand_over(path: Path, account: Account, *, directory: bool) -> None:
    """chown and chmod through a descriptor opened without following symlinks: the account controls
    the task directory, and a link it planted must not make root change some other file."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | (os.O_DIRECTORY if directory else 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not (stat.S_ISDIR(st.st_mode) if directory else stat.S_ISREG(st.st_mode)):
            raise OSError(f"{path} is not a {'directory' if directory else 'regular file'}")
        if (st.st_uid, st.st_gid) != (account.uid, account.gid):
            os.fchown(fd, account.uid, account.gid)
        wanted = PRIVATE_DIR_MODE if directory else private(st.st_mode)
        if stat.S_IMODE(st.st_mode) != wanted:
            os.fchmod(fd, wanted)
    finally:
        os.close(fd)


def hand_over_fresh(paths: TaskPaths, account: Account) -> bool:
    """hand_over of a task directory and wd this step has just made (layout.create_task_dir, mode 0700 less
    the umask): nobody but the worker has had them (the job's directory above is root's), so they are changed
    by path, wd first, with no descriptor to open and check. False (nothing done) where the umask cannot be
    read."""
    mode = _fresh_mode()
    if mode is None:
        return False
    for path in (paths.wd, paths.task_dir):
        os.chown(path, account.uid, account.gid, follow_symlinks=False)
        if mode != PRIVATE_DIR_MODE:
            os.chmod(path, PRIVATE_DIR_MODE)
    return True


@functools.cache
def _fresh_mode() -> int | None:
    """The mode layout.create_task_dir gives: 0o700 less the umask, read where reading it changes nothing
    (os.umask would set it, racing the worker's threads); None where the kernel does not show it."""
    try:
        with open("/proc/self/status") as status:
            umask = next((int(line.split()[1], 8) for line in status if line.startswith("Umask:")), None)
    except OSError:
        return None
    return None if umask is None else PRIVATE_DIR_MODE & ~umask


def needs_account(step: Step) -> bool:
    """Whether prepare() has anything to do: switch to an account, or fail a step whose user is unknown."""
    return step.user_missing or (isolating() and not step.elevated)


def prepare(step: Step, paths: TaskPaths, *, fresh: bool = False) -> Account | None:
    """The account to run the step as (None: the worker's own), with its task directory handed to it.
    fresh: this step made the task directory and wd (layout.create_task_dir), a retry did not."""
    if step.user_missing:
        name = (step.user or {}).get("name")
        raise StepFailure.of(
            USER_ERROR, "UserAccountNotFound", f"The pool has no user account named {name!r} (userIdentity.username)."
        )
    if not needs_account(step):
        return None
    try:
        blocked = blocked_parent(paths)
        if blocked is not None:
            raise StepFailure.of(
                SERVER_ERROR,
                "TaskAccountSetupFailed",
                (
                    f"{blocked} cannot be passed through by other users (it lacks o+x), so the task's "
                    "non-admin account cannot reach its directory; make the data dir traversable "
                    "(e.g. chmod 755) or run the task with elevationLevel admin."
                ),
            )
        account = account_of(step, paths)
        if not (fresh and hand_over_fresh(paths, account)):
            hand_over(paths.task_dir, account, directory=True)
            hand_over(paths.wd, account, directory=True)
        return account
    except OSError as exc:
        raise StepFailure.of(
            SERVER_ERROR, "TaskAccountSetupFailed", f"Could not hand the task directory to the task's account: {exc}"
        ) from None


def hand_over_resource_files(paths: TaskPaths, files: tuple[ResourceFile, ...], account: Account) -> None:
    """Each downloaded file, and the directories made for it inside wd, become the account's."""
    try:
        for file in files:
            dest = paths.wd / file.file_path
            for parent in reversed(dest.relative_to(paths.wd).parents[:-1]):  # wd itself is done
                hand_over(paths.wd / parent, account, directory=True)
            hand_over(dest, account, directory=False)
    except OSError as exc:
        raise StepFailure.of(
            SERVER_ERROR, "TaskAccountSetupFailed", f"Could not hand the resource files to the task's account: {exc}"
        ) from None
