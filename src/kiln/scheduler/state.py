"""What the scheduler's parts share: step references, effects to carry out, jobs in memory."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from kiln import undo
from kiln.compute.protocol import Step
from kiln.core import task as task_rules
from kiln.core.dependencies import DependencyGraph
from kiln.core.exit_conditions import JobAction
from kiln.core.task import TaskState
from kiln.errors import StaleState
from kiln.scheduler.slots import JobQueue
from kiln.store import batched, kept_dirs
from kiln.store import rows as db
from kiln.undo import Tracked

#: Task states that hold a node's slots.
ON_NODE = (TaskState.PREPARING.value, TaskState.RUNNING.value)


@dataclass(frozen=True, slots=True)
class StepRef:
    """What a step in flight belongs to; results are matched on (step_id) and checked against `attempt`."""

    kind: str
    job_key: str
    node_id: str
    attempt: int
    seq: int | None = None
    slots: int = 0
    #: the task's row as it was dispatched: its result then re-reads only what can change while it runs
    #: (store.rows.RUNNING_COLUMNS); None makes it read the whole row (task updated meanwhile, or none kept)
    row: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    #: a task step sent ahead: the task stays active until the node says it started (scheduler/ahead.py)
    ahead: bool = False
    #: of a step sent ahead: its job's turn (`JobEntry.last_served`) when it was sent, its place in the turns
    turn: int = 0


def task_step_id(seq: int, attempt: int) -> str:
    """The step id of a task's attempt: results and kills are matched on it."""
    return f"t:{seq}:{attempt}"


def coordination_step_id(seq: int, attempt: int, index: int) -> str:
    """The step id of a multi-instance task's coordination command on its instance `index` (0: the primary)."""
    return f"c:{seq}:{attempt}:{index}"


def task_seq_of(step_id: str) -> int | None:
    """The task seq of a task step id (`t:<seq>:<attempt>`); None for other steps."""
    return int(step_id.split(":", 2)[1]) if step_id.startswith("t:") else None


@dataclass(frozen=True, slots=True)
class Dispatch:
    """A step a decision sends, described as data; the scheduler builds it (account, placement, faults)."""

    kind: str  #: "task" (an attempt of `task`) or "prep" (the job's preparation task on the node)
    step_id: str
    job_key: str
    node_id: str
    task: dict[str, Any] | None = None  #: the task's row, for task steps


@dataclass(frozen=True, slots=True)
class RecordWrite:
    """A preparation/release record's store write as a decision made it: `before` None inserts `values`;
    otherwise the stored row, guarded by `before`'s states and attempts, takes `values`."""

    before: dict[str, Any] | None
    values: dict[str, Any]

    def apply(self, conn: Connection) -> None:
        if self.before is None:
            db.insert_rows(conn, db.preparations, [self.values])
        else:
            transition(conn, db.preparations, prep_key(self.before), self.before, self.values)


@dataclass(slots=True)
class Effects:
    """What to do once a transaction has committed."""

    run: dict[str, list[Step]] = field(default_factory=lambda: defaultdict(list))
    kill: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    #: steps sent ahead to take back from their node unless it has started them (`ControlState.withdraw`)
    withdraw: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    remove_dirs: list[tuple[str, str]] = field(default_factory=list)  #: (node_id, path)
    #: directories to delete once their retention time has passed, written with the records (store.kept_dirs)
    retain: list[kept_dirs.Kept] = field(default_factory=list)
    #: the due times of those written: the retention sweep may have to come sooner
    kept: list[datetime] = field(default_factory=list)
    wake: bool = False
    check_jobs: set[str] = field(default_factory=set)  #: onAllTasksComplete candidates
    #: (job_key, exitOptions.jobAction) of tasks completed in this transaction, taken before it commits
    job_actions: list[tuple[str, JobAction]] = field(default_factory=list)
    #: jobs that completed or were removed in this transaction (their auto pools and schedules move on)
    ended_jobs: list[dict[str, Any]] = field(default_factory=list)
    #: task row changes of this transaction by seq, written together by `write_batched` (one statement per shape)
    task_changes: dict[int, batched.TaskChange] = field(default_factory=dict)
    #: (node_id, counter column) -> increment, written once per transaction
    node_counters: Counter = field(default_factory=Counter)
    #: steps decided and not yet built (the scheduler turns them into `run` within the transaction)
    dispatch: list[Dispatch] = field(default_factory=list)
    #: preparation/release record writes decided and not yet made (made in order, right after the decision)
    records: list[RecordWrite] = field(default_factory=list)

    def change_record(self, record: dict[str, Any], changes: dict[str, Any]) -> None:
        """A preparation/release record changes as computed from memory's copy, which follows at once (undone
        if the transaction fails); the store's row is guarded by the states and attempts it had."""
        self.records.append(RecordWrite(dict(record), changes))
        undo.update(record, changes)

    def write_records(self, conn: Connection) -> None:
        for write in self.records:
            write.apply(conn)
        self.records.clear()
        if self.retain:
            kept_dirs.keep(conn, self.retain)
            self.kept.extend(k.due for k in self.retain)
            self.retain.clear()

    def change_task(self, row: dict[str, Any], changes: dict[str, Any]) -> None:
        """`changes` computed from the task's `row` as it is now; a task changed twice in one transaction
        (started and ended) is written once, guarded by the state and attempt it had before the first."""
        known = self.task_changes.get(row["seq"])
        if known is None:
            self.task_changes[row["seq"]] = batched.TaskChange(
                row["state"], row["attempt"], changes, row["job_key"], row["result"], row["required_slots"]
            )
        else:
            known.values = {**known.values, **changes}

    def write_batched(self, conn: Connection, *, counters: bool = True) -> None:
        """Write the record writes and batched task changes decided so far and, unless told to keep them for later
        in the transaction, the node counters; then forget what was written. StaleState if a row had moved."""
        self.write_records(conn)
        if not batched.change_tasks(conn, self.task_changes):
            raise StaleState(f"a task changed under the scheduler, one of {sorted(self.task_changes)[:20]}")
        self.task_changes.clear()
        if counters and self.node_counters:
            batched.add_to_node_counters(conn, self.node_counters)
            self.node_counters.clear()

    def merge(self, other: Effects) -> None:
        for node_id, steps in other.run.items():
            self.run[node_id].extend(steps)
        for node_id, step_ids in other.kill.items():
            self.kill[node_id].extend(step_ids)
        for node_id, step_ids in other.withdraw.items():
            self.withdraw[node_id].extend(step_ids)
        self.remove_dirs.extend(other.remove_dirs)
        self.retain.extend(other.retain)
        self.kept.extend(other.kept)
        self.wake = self.wake or other.wake
        self.check_jobs |= other.check_jobs
        self.job_actions.extend(other.job_actions)
        self.ended_jobs.extend(other.ended_jobs)
        self.dispatch.extend(other.dispatch)
        self.records.extend(other.records)


@dataclass(slots=True)
class JobEntry(Tracked):
    """The scheduler's view of a job that is not finished."""

    row: dict[str, Any]
    queue: JobQueue = field(default_factory=JobQueue)
    manager_seq: int | None = None  #: task seq of its job manager task (-1: none); None until looked up
    #: placement ticket of its latest task served (placed or sent ahead), or of the moment it last began to want
    #: slots (ControlState.tasks_added): equal priorities take turns in this order
    last_served: int = 0
    #: which tasks wait for which (jobs with usesTaskDependencies only); the queue holds only tasks free to run
    graph: DependencyGraph | None = None

    def __post_init__(self) -> None:
        if self.graph is None and self.row["spec"].get("usesTaskDependencies"):
            self.graph = DependencyGraph()

    @property
    def key(self) -> str:
        return self.row["key"]

    def queue_active(self, part: list[tuple[int, int]]) -> None:
        """Active tasks (seq, slots) read after a restart join the queue, unless they wait for parents."""
        for seq, slots in part:
            if self.graph is None or not self.graph.waiting(seq):
                self.queue.push(seq, slots)

    @property
    def spec(self) -> dict[str, Any]:
        return self.row["spec"]


def transition(
    conn: Connection,
    table: db.Table,
    keys: dict[str, Any],
    row: dict[str, Any],
    changes: dict[str, Any],
    *,
    bump_etag: bool = False,
) -> None:
    """A state change the scheduler computed from `row` (store.rows.transition); StaleState if the stored
    row had moved, which rolls the transaction back."""
    if not db.transition(conn, table, keys, row, changes, bump_etag=bump_etag):
        raise StaleState(f"{table.name} {keys} is no longer {db.guard(table, row)}")


def requeue(conn: Connection, task: dict[str, Any], now: datetime) -> None:
    """A task that held a node goes back to active, requeueCount + 1 (not a retry): its node restarted or died."""
    transition(
        conn,
        db.tasks,
        {"seq": task["seq"]},
        task,
        task_rules.transition(task, TaskState.ACTIVE, now, requeue=True),
        bump_etag=True,
    )


def prep_key(record: dict[str, Any]) -> dict[str, str]:
    return {"job_key": record["job_key"], "node_id": record["node_id"]}


def change_record(conn: Connection, record: dict[str, Any], changes: dict[str, Any]) -> None:
    """A preparation/release record changes as computed from memory's copy: guarded by its states and attempts
    in the store (StaleState if they moved), and memory follows (undone if the transaction fails)."""
    RecordWrite(dict(record), changes).apply(conn)
    undo.update(record, changes)
