"""Tables. Rules live in core/; these only hold rows."""

from __future__ import annotations

import functools
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
    true,
)

metadata = MetaData()

#: Job ids: 64 characters from the API, but a schedule's jobs are `<scheduleId>:job-<n>`.
JOB_ID_LENGTH = 100
#: The rows of ix_tasks_sent_ahead, a partial index: tasks whose start on the node they went to is not yet known.
SENT_AHEAD = text("sent_ahead_at IS NOT NULL")
#: The rows of ix_jobs_unfinished, a partial index: the jobs a restart tracks (a query must say it in these words).
UNFINISHED = text("state <> 'completed'")


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC in Python, naive UTC in the database (SQLite has no time zones)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)

    # On SQLite the value is text in SQLAlchemy's storage format ("2026-11-26 07:13:05.123456");
    # isoformat and fromisoformat make and read it in one C call each, where the DateTime impl's
    # processors format and parse it field by field (they were ~10% of the server's CPU under load).
    def bind_processor(self, dialect):
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)
        return _sqlite_text

    def result_processor(self, dialect, coltype):
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)
        return _sqlite_utc


@functools.lru_cache(maxsize=1024)  # one transaction writes the same moment in many columns and rows
def _sqlite_text(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    text = value.isoformat(" ")  # without timespec: the fastest form, but it leaves out zero microseconds
    return text[:26] if value.microsecond else text[:19] + ".000000"


@functools.lru_cache(maxsize=4096)  # a page's rows share moments (created = modified = changed state)
def _sqlite_utc(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value + "+00:00")  # replace() cost as much again


def _times() -> list[Column]:
    return [
        Column("creation_time", UTCDateTime, nullable=False),
        Column("last_modified", UTCDateTime, nullable=False),
        Column("etag", String(32), nullable=False),
    ]


pools = Table(
    "pools",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("id", String(64), nullable=False),
    Column("spec", JSON, nullable=False),
    Column("state", String(16), nullable=False),
    Column("state_transition_time", UTCDateTime, nullable=False),
    Column("allocation_state", String(16), nullable=False),
    Column("allocation_state_transition_time", UTCDateTime, nullable=False),
    Column("target_dedicated_nodes", Integer, nullable=False),
    Column("target_low_priority_nodes", Integer, nullable=False),
    Column("task_slots_per_node", Integer, nullable=False),
    Column("resize_errors", JSON),
    *_times(),
)

nodes = Table(
    "nodes",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("pool_key", String(64), nullable=False, index=True),
    Column("state", String(24), nullable=False),
    Column("scheduling_state", String(16), nullable=False),
    Column("state_transition_time", UTCDateTime, nullable=False),
    Column("allocation_time", UTCDateTime, nullable=False),
    Column("last_boot_time", UTCDateTime),
    Column("incarnation", Integer, nullable=False, default=0),
    Column("root_dir", Text, nullable=False),
    Column("total_tasks_run", Integer, nullable=False, default=0),
    Column("total_tasks_succeeded", Integer, nullable=False, default=0),
    Column("running_tasks", Integer, nullable=False, default=0),
    Column("running_slots", Integer, nullable=False, default=0),
    #: the pool's startTask as it was when the node last (re)started: a pool update reaches it at its next one
    Column("start_task", JSON),
    Column("start_task_info", JSON),  #: startTaskInfo, as rendered
    Column("errors", JSON),  #: why the node is starttaskfailed or unusable
    Column("is_dedicated", Boolean, nullable=False, default=True, server_default=true()),
    Index("ix_nodes_pool_id", "pool_key", "id"),  #: a pool's nodes a page at a time (store.lists)
)

jobs = Table(
    "jobs",
    metadata,
    Column("key", String(JOB_ID_LENGTH), primary_key=True),
    Column("id", String(JOB_ID_LENGTH), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("spec", JSON, nullable=False),
    Column("state", String(16), nullable=False),
    Column("previous_state", String(16)),
    Column("state_transition_time", UTCDateTime, nullable=False),
    Column("previous_state_transition_time", UTCDateTime),
    Column("pool_key", String(64), nullable=False, index=True),
    Column("priority", Integer, nullable=False),
    Column("end_time", UTCDateTime),
    Column("terminate_reason", String(1024)),
    Column("delete_requested", Boolean, nullable=False, default=False),
    Column("pool_id", String(64)),  #: the pool the job runs on, when it is an auto pool (executionInfo.poolId)
    Column("schedule_key", String(64), index=True),  #: the job schedule that created the job
    *_times(),
    Index("ix_jobs_seq", "seq"),  #: list pages seek by seq (store.lists)
    Index("ix_jobs_schedule_seq", "schedule_key", "seq"),
    #: a restart reads the unfinished jobs in seq order, not the history of completed ones
    Index("ix_jobs_unfinished", "seq", sqlite_where=UNFINISHED, postgresql_where=UNFINISHED),
)

tasks = Table(
    "tasks",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("job_key", String(JOB_ID_LENGTH), nullable=False),
    Column("key", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("spec", JSON, nullable=False),
    Column("state", String(16), nullable=False),
    Column("previous_state", String(16)),
    Column("state_transition_time", UTCDateTime, nullable=False),
    Column("previous_state_transition_time", UTCDateTime),
    Column("required_slots", Integer, nullable=False),
    Column("max_retries", Integer, nullable=False),
    Column("pool_id", String(64)),
    Column("node_id", String(64)),
    Column("attempt", Integer, nullable=False, default=0),
    Column("retry_count", Integer, nullable=False, default=0),
    Column("requeue_count", Integer, nullable=False, default=0),
    Column("last_retry_time", UTCDateTime),
    Column("last_requeue_time", UTCDateTime),
    Column("start_time", UTCDateTime),
    Column("end_time", UTCDateTime),
    Column("exit_code", Integer),
    Column("result", String(16)),
    Column("failure_info", JSON),
    Column("dependency_action", String(8)),  #: satisfy | block, decided by the exit conditions at completion
    #: an active task sent ahead to a node (scheduler/ahead.py): where and when, until its start is known; after a
    #: server restart its run, if the node started it unseen, is counted from these
    Column("sent_ahead_node", String(64)),
    Column("sent_ahead_at", UTCDateTime),
    *_times(),
    UniqueConstraint("job_key", "key", name="uq_tasks_job_key"),
    #: seq last: a job's tasks in a state come in seq order, so a list page seeks and stops (store.task_pages)
    Index("ix_tasks_job_state", "job_key", "state", "seq"),
    Index("ix_tasks_job_seq", "job_key", "seq"),
    Index("ix_tasks_node_state", "node_id", "state"),
    Index("ix_tasks_job_start", "job_key", "start_time"),  #: the dashboard's timeline (kiln.store.dashboard)
    Index("ix_tasks_job_result", "job_key", "result", "seq"),  #: list filters on result and exit code
    Index("ix_tasks_job_exit", "job_key", "exit_code", "seq"),
    #: the few tasks sent ahead (a restart or a lost node counts their unseen runs): not a scan of every task
    Index("ix_tasks_sent_ahead", "sent_ahead_node", sqlite_where=SENT_AHEAD, postgresql_where=SENT_AHEAD),
)

preparations = Table(
    "preparations",
    metadata,
    Column("job_key", String(JOB_ID_LENGTH), primary_key=True),
    Column("node_id", String(64), primary_key=True),
    Column("pool_id", String(64), nullable=False),
    Column("incarnation", Integer, nullable=False),
    Column("prep_state", String(16), nullable=False),
    Column("prep_attempt", Integer, nullable=False),
    Column("prep_start_time", UTCDateTime),
    Column("prep_end_time", UTCDateTime),
    Column("prep_exit_code", Integer),
    Column("prep_result", String(16)),
    Column("prep_failure_info", JSON),
    Column("prep_retry_count", Integer, nullable=False),
    Column("prep_last_retry_time", UTCDateTime),
    Column("release_state", String(16), nullable=False),
    Column("release_attempt", Integer, nullable=False),
    Column("release_start_time", UTCDateTime),
    Column("release_end_time", UTCDateTime),
    Column("release_exit_code", Integer),
    Column("release_result", String(16)),
    Column("release_failure_info", JSON),
)

job_schedules = Table(
    "job_schedules",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("id", String(64), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("spec", JSON, nullable=False),  #: schedule, jobSpecification, metadata, displayName
    Column("state", String(16), nullable=False),
    Column("previous_state", String(16)),
    Column("state_transition_time", UTCDateTime, nullable=False),
    Column("previous_state_transition_time", UTCDateTime),
    Column("last_due", UTCDateTime),  #: the due time of the latest occurrence that created a job
    Column("job_count", Integer, nullable=False, default=0),  #: n of the latest job `<id>:job-<n>`
    Column("recent_job_id", String(JOB_ID_LENGTH)),
    Column("pool_id", String(64)),  #: the auto pool shared by the schedule's jobs (poolLifetimeOption jobschedule)
    Column("end_time", UTCDateTime),
    *_times(),
    Index("ix_job_schedules_seq", "seq"),  #: list pages seek by seq (store.lists)
)

#: One row per instance of a running or finished multi-instance task (0 = the primary, 1.. = subtasks);
#: a restart requeues the task as a whole and drops the rows of the unfinished attempt.
subtasks = Table(
    "subtasks",
    metadata,
    Column("task_seq", Integer, primary_key=True),
    Column("id", Integer, primary_key=True),
    Column("job_key", String(JOB_ID_LENGTH), nullable=False, index=True),
    Column("attempt", Integer, nullable=False),
    Column("pool_id", String(64), nullable=False),
    Column("node_id", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("state_transition_time", UTCDateTime, nullable=False),
    Column("previous_state", String(16)),
    Column("previous_state_transition_time", UTCDateTime),
    Column("start_time", UTCDateTime),
    Column("end_time", UTCDateTime),
    Column("exit_code", Integer),
    Column("result", String(16)),
    Column("failure_info", JSON),
)

#: Each transition of a task, job, node or (job, node) prep/release record, with its stimulus (a task's story).
#: A task keeps its last STORY_LENGTH (kiln.store.stories); a job's records go with the job.
transitions = Table(
    "transitions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(8), nullable=False),  #: task, job, node, prep, release
    Column("job_key", String(JOB_ID_LENGTH)),
    Column("task_seq", Integer),
    Column("node_id", String(64)),
    Column("from_state", String(24)),  #: None: created in this state
    Column("to_state", String(24), nullable=False),
    Column("stimulus", String(256), nullable=False),
    Column("detail", String(256)),
    Column("at", UTCDateTime, nullable=False),
    #: a task's records; with task_seq NULL, the few others (job, node, prep/release). The only index
    #: besides the key: each one cost ~4 us per record written (SQLite, measured), and a task writes ~3.
    Index("ix_transitions_task", "task_seq", "id"),
)

#: Each node that has left its pool: when it was allocated and when it left, for listPoolUsageMetrics (the
#: nodes still in their pools count from their allocation_time).
node_lifetimes = Table(
    "node_lifetimes",
    metadata,
    Column("node_id", String(64), primary_key=True),
    Column("pool_id", String(64), nullable=False),
    Column("vm_size", Text, nullable=False),
    Column("start_time", UTCDateTime, nullable=False),
    Column("end_time", UTCDateTime, nullable=False),
)


def _usage() -> list[Column]:
    """What tasks' processes used, as their nodes measured it (kiln.store.statistics adds to these)."""
    return [
        Column("user_cpu", Float, nullable=False),  #: seconds
        Column("kernel_cpu", Float, nullable=False),
        Column("wall_clock", Float, nullable=False),
        Column("read_ops", BigInteger, nullable=False),
        Column("write_ops", BigInteger, nullable=False),
        Column("read_bytes", BigInteger, nullable=False),
        Column("write_bytes", BigInteger, nullable=False),
        Column("last_update_time", UTCDateTime, nullable=False),
    ]


#: A task's statistics, summed over its attempts; deleted with the task.
task_stats = Table(
    "task_stats",
    metadata,
    Column("task_seq", Integer, primary_key=True),
    Column("job_key", String(JOB_ID_LENGTH), nullable=False, index=True),
    *_usage(),
)

#: The statistics of what owns tasks, summed over the tasks' attempts: scope 'job', 'schedule' or 'pool' with
#: the owner's key, or 'account' with key '' (the account's lifetime statistics). A job's row goes with the
#: job, a schedule's or pool's with it; the account's stays.
usage_stats = Table(
    "usage_stats",
    metadata,
    Column("scope", String(8), primary_key=True),
    Column("key", String(JOB_ID_LENGTH), primary_key=True),
    Column("start_time", UTCDateTime, nullable=False),
    *_usage(),
    Column("wait", Float, nullable=False),  #: seconds from each completed task's creation to its last start
    Column("succeeded", Integer, nullable=False),
    Column("failed", Integer, nullable=False),
    Column("retries", Integer, nullable=False),
    Column("peak_rss", BigInteger, nullable=False),  #: the largest resident size of one task's processes, bytes
)


counters = Table(
    "counters",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("value", Integer, nullable=False),
)

#: How many of a job's tasks, and how many of their slots, are in each (state, result): taskcounts and
#: taskslotcounts read these few rows instead of counting the job's tasks. Kept by store.task_tally in the
#: transaction of every task insert, state or result change and delete; result '' when the task has none.
task_counts = Table(
    "task_counts",
    metadata,
    Column("job_key", String(JOB_ID_LENGTH), primary_key=True),
    Column("state", String(16), primary_key=True),
    Column("result", String(16), primary_key=True),
    Column("tasks", Integer, nullable=False),
    Column("slots", Integer, nullable=False),
)

#: A finished step's directory kept on its node until its retentionTime passes (store.kept_dirs): written in the
#: transaction that ends the step and swept in due order, so that history holds no timer in memory.
kept_dirs = Table(
    "kept_dirs",
    metadata,
    Column("node_id", String(64), primary_key=True),
    Column("path", Text, primary_key=True),
    Column("job_key", String(JOB_ID_LENGTH), nullable=False),
    Column("due", UTCDateTime, nullable=False),
    Index("ix_kept_dirs_due", "due"),
    Index("ix_kept_dirs_job_path", "job_key", "path"),  #: a deleted task's or job's rows go with it
)

#: What each ended step of a job moved, per direction and source (Kiln's transfer accounting, store.transfers):
#: one row per (step, direction, source); a job's rows go with the job.
transfers = Table(
    "transfers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_key", String(JOB_ID_LENGTH), nullable=False, index=True),
    Column("node_id", String(64), nullable=False),
    Column("kind", String(8), nullable=False),  #: the step's: task, prep, release, coord
    Column("task_seq", Integer),  #: None: the job's preparation or release task
    Column("attempt", Integer, nullable=False),
    Column("direction", String(8), nullable=False),  #: download, upload
    Column("source", Text, nullable=False),  #: a URL without its query (no SAS), or an auto-storage container
    Column("files", Integer, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("seconds", Float, nullable=False),
    Column("at", UTCDateTime, nullable=False),  #: when the result was applied
)
