"""What crosses the seam between the scheduler and the nodes: steps out, results back."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol

#: Kinds of step a node runs. Prep and release use no slot; deploy extracts the pool's packages and runs nothing.
STEP_KINDS = ("task", "prep", "release", "start", "deploy")


@dataclass(frozen=True, slots=True)
class ResourceFile:
    """Files to fetch into the step's working directory before the command runs: one URL, or every blob of a
    container (under blob_prefix), kept at its blob path under file_path."""

    http_url: str | None
    #: httpUrl: the destination file; a container: the directory its blobs go under ("": the working directory)
    file_path: str
    file_mode: str | None = None  #: octal, e.g. "0770"
    container_url: str | None = None  #: a container's URL, with its SAS token if it is not public
    blob_prefix: str | None = None
    #: what the user named, for messages: the autoStorageContainerName (its URL holds a SAS Kiln made)
    source: str | None = None


@dataclass(frozen=True, slots=True)
class OutputFile:
    """Files to upload to a Blob container after the command exits (compute/node/output_files.py)."""

    file_pattern: str
    container_url: str  #: with its SAS token
    upload_condition: str  #: tasksuccess | taskfailure | taskcompletion
    path: str | None = None  #: the blob's name (no wildcard in the pattern) or the prefix of its blobs
    upload_headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class AppPackage:
    """An application package to have extracted on the node before the command runs (cached per node)."""

    app_id: str
    version: str
    zip_path: str  #: on the host; nodes share it
    env_names: tuple[str, ...]  #: the variables that get the extracted directory
    pool: bool = False  #: one of the pool's packages (a failure says so), not the task's own


@dataclass(frozen=True, slots=True)
class Step:
    """One command to run on one node; (step_id) is unique per attempt, so stale results can be dropped."""

    step_id: str
    kind: str  #: one of STEP_KINDS
    node_root: str  #: absolute path of the node's root directory on its host
    task_dir: str  #: task directory relative to node_root, e.g. "workitems/j1/job-1/t1"
    command_line: str
    #: the user's environment, already merged (job common settings, then the task's own)
    environment: dict[str, str] = field(default_factory=dict)
    #: identity variables: AZ_BATCH_ACCOUNT_NAME, _ACCOUNT_URL, _POOL_ID, _NODE_ID, _JOB_ID, _TASK_ID ...
    batch_context: dict[str, str] = field(default_factory=dict)
    #: task directory of the job's preparation task, relative to node_root (None: job has none)
    prep_task_dir: str | None = None
    resource_files: tuple[ResourceFile, ...] = ()
    max_wall_clock_seconds: float | None = None  #: None = unlimited
    elevated: bool = False  #: autoUser elevationLevel admin
    #: whose account: autoUser scope "pool" (one non-admin account shared by the node's steps) or "task"
    #: (its own), or "user": the pool's named account `user` ({name, uid, gid}; uid None: Kiln picks one)
    scope: str = "pool"
    user: dict[str, Any] | None = None
    user_missing: bool = False  #: userIdentity.username names no account of the pool
    #: files fetched into the task directory itself (a multi-instance task's commonResourceFiles)
    shared_files: tuple[ResourceFile, ...] = ()
    #: keep what the command leaves running in the background (a multi-instance coordination command's
    #: services) until the step id is killed, instead of killing it when the command exits
    keep_background: bool = False
    #: task slots the step holds on its node while it runs (0: preparation, release and start tasks)
    slots: int = 0
    #: sent ahead to a node whose slots are all taken: the node starts it in a slot that one of its steps
    #: frees by finishing, and tells the control plane in the report that carries that step's result
    ahead: bool = False
    output_files: tuple[OutputFile, ...] = ()
    #: application packages: the pool's, then the task's own
    packages: tuple[AppPackage, ...] = ()
    #: a fault on demand (scheduler/faults.py): the first resource file's download gets this HTTP status
    download_fault: int | None = None

    def to_message(self) -> dict[str, Any]:
        """By hand, not dataclasses.asdict (which deep-copies every value): one of these per task."""
        message = {name: getattr(self, name) for name in _STEP_FIELDS}
        message["resource_files"] = [asdict(f) for f in self.resource_files]
        message["shared_files"] = [asdict(f) for f in self.shared_files]
        message["output_files"] = [asdict(f) for f in self.output_files]
        message["packages"] = [asdict(p) for p in self.packages]
        return message

    @classmethod
    def from_message(cls, data: dict[str, Any]) -> Step:
        files = tuple(ResourceFile(**f) for f in data.get("resource_files", ()))
        shared = tuple(ResourceFile(**f) for f in data.get("shared_files", ()))
        outputs = tuple(
            OutputFile(**{**f, "upload_headers": tuple(tuple(h) for h in f["upload_headers"])})
            for f in data.get("output_files", ())
        )
        packages = tuple(AppPackage(**{**p, "env_names": tuple(p["env_names"])}) for p in data.get("packages", ()))
        return cls(
            **{**data, "resource_files": files, "shared_files": shared, "output_files": outputs, "packages": packages}
        )


_STEP_FIELDS = tuple(f.name for f in fields(Step))


@dataclass(frozen=True, slots=True)
class StepResult:
    """How a step ended on its node."""

    step_id: str
    start_time: float  #: epoch seconds
    end_time: float
    exit_code: int | None  #: None when the command never ran
    #: Batch failureInfo {category, code, message, details?} for pre-processing/launch errors and timeouts
    failure: dict[str, Any] | None = None
    timed_out: bool = False
    #: what the command's process tree used: user_cpu and kernel_cpu (seconds), max_rss (bytes), read_ops,
    #: write_ops, read_bytes, write_bytes (the kernel's I/O counters); None when no command ran
    usage: dict[str, float] | None = None
    killed: bool = False  #: ended by a kill request
    #: a notice, not an end: a step sent ahead has started (at start_time) and still runs
    running: bool = False
    #: the failure is an output file upload's: the task completes (never retried) and fileUploadError applies
    upload_failed: bool = False
    #: what its resource and output files moved (compute/node/transfers.py): [{direction, source, files, bytes,
    #: seconds}]; None when nothing moved
    transfers: list[dict[str, Any]] | None = None

    def to_message(self) -> dict[str, Any]:
        """Shallow (asdict deep-copies): the failure dict is built for this result alone."""
        return {name: getattr(self, name) for name in _RESULT_FIELDS}

    @classmethod
    def from_message(cls, data: dict[str, Any]) -> StepResult:
        return cls(**data)


_RESULT_FIELDS = tuple(f.name for f in fields(StepResult))


@dataclass(frozen=True, slots=True)
class Withdrawal:
    """A node's answer to taking back steps sent ahead: the ones it will never start, and the ones it already
    had started (their notices and results follow); a step in neither it does not know (not arrived yet)."""

    withdrawn: list[str]
    started: list[str]


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One entry of a node directory listing, path relative to the listed root."""

    name: str
    is_directory: bool
    size: int = 0
    mtime: float = 0.0
    ctime: float = 0.0
    mode: int = 0


class NodeUnavailable(Exception):
    """The node cannot be reached: its worker is not up (launching, restarting, lost, removed) or did not
    answer in time."""


#: Called with (node_id, results) whenever a node reports finished steps (in batches).
ResultsCallback = Callable[[str, list[StepResult]], Awaitable[None]]
#: Called with (node_id) when a node's worker has registered and its agent answers.
NodeUpCallback = Callable[[str], Awaitable[None]]
#: Called with (node_id) when a node's worker is gone (died, killed, restarting); its steps are lost.
NodeDownCallback = Callable[[str], Awaitable[None]]
#: Called with (node_id, why) when a node cannot start (its host refused it or did not start it in time); it is
#: not tried again until restarted.
NodeFailedCallback = Callable[[str, str], Awaitable[None]]


class ComputeBackend(Protocol):
    """Provisions nodes and runs steps on them. Knows nothing of jobs' rules."""

    on_results: ResultsCallback
    on_node_up: NodeUpCallback
    on_node_down: NodeDownCallback
    on_node_failed: NodeFailedCallback
    #: the nodes' roots are on this server's disk, where the node_root given names them (not on other hosts)
    node_files_here: bool

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def add_node(self, node_id: str, node_root: str) -> None:
        """Start the node; returns once it is launching. on_node_up follows when it is ready, or on_node_failed."""

    async def remove_node(self, node_id: str) -> None:
        """Stop the node's worker for good (its files stay on disk unless wiped by the caller)."""

    async def restart_node(self, node_id: str, *, wipe: bool = False) -> None:
        """Reboot (wipe=False) or reimage (wipe=True): on_node_down, then on_node_up again."""

    def is_up(self, node_id: str) -> bool: ...
    async def measure_usage(self, roots: Mapping[str, str]) -> dict[str, dict[str, float]]:
        """Per node id (with its root): what its processes and files use now, measured where the node runs
        (compute/usage.py)."""

    async def run(self, node_id: str, steps: list[Step]) -> None:
        """Hand steps to the node's agent in one message; results arrive via on_results."""

    def node_address(self, node_id: str) -> str | None:
        """The address the node's host is reached at by other hosts; None where that is the server's own host
        (each node then has a loopback address of its own, core.multi_instance.node_address)."""

    async def withdraw(self, node_id: str, step_ids: list[str]) -> Withdrawal:
        """Take back steps sent ahead that have not started; those that have are left to run and report."""

    async def kill(self, node_id: str, step_ids: list[str]) -> None:
        """Kill the steps' whole process trees; returns once they are dead. No results are reported for them."""

    async def lose(self, node_id: str) -> bool:
        """A fault on demand: the node's worker dies (SIGKILL), as a crashed VM would; False if it was not up."""

    async def kill_processes(self, node_id: str, task_dir: str) -> int:
        """A fault on demand: SIGKILL the processes of one task directory (its command, as the OOM killer
        would), leaving the node to report how the command ended; returns how many were killed."""

    async def list_files(self, node_id: str, path: str, recursive: bool) -> list[FileEntry]: ...
    async def stat_file(self, node_id: str, path: str) -> FileEntry: ...
    async def read_file(self, node_id: str, path: str, start: int = 0, end: int | None = None) -> bytes: ...
    async def delete_file(self, node_id: str, path: str, recursive: bool) -> None: ...
