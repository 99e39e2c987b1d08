"""What the scheduler rebuilds its memory from after a restart: the live rows (unfinished jobs, their tasks on
nodes or waiting for one, their preparation records), each read through an index, never the store's history
(completed tasks, ended jobs), so that a restart costs what the live work costs, not what the store holds. The
one exception is a job with task dependencies: its completed tasks are read too, a part at a time and as
tuples, behind the open port, for the integers of those that satisfied (taskIdRanges wait on no other)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import Connection, select
from sqlalchemy import Row as SqlRow

from kiln.store import rows
from kiln.store.rows import Row
from kiln.store.schema import UNFINISHED, jobs, preparations, tasks

#: Task states other than completed: a graph's live tasks.
UNCOMPLETED = ("active", "preparing", "running")
#: What a dependency graph is rebuilt from, besides the specs of the tasks it gates.
_GRAPH_COLUMNS = (
    tasks.c.seq,
    tasks.c.key,
    tasks.c.id,
    tasks.c.required_slots,
    tasks.c.state,
    tasks.c.dependency_action,
)


def unfinished_jobs(conn: Connection) -> list[Row]:
    """Jobs that have not completed, in the order they were added, through the partial index of them."""
    query = select(jobs).where(UNFINISHED).order_by(jobs.c.seq)
    return [dict(r) for r in conn.execute(query).mappings()]


def tasks_in_states(conn: Connection, job_keys: Iterable[str], states: Sequence[str]) -> list[Row]:
    """The jobs' tasks in these states, job by job through (job_key, state, seq): no other job's rows and no
    task in another state are read."""
    return [task for job_key in job_keys for task in rows.tasks_in_states(conn, states, job_key=job_key)]


def queued(conn: Connection, job_key: str, after_seq: int = -1, *, count: int | None = None) -> list[tuple[int, int]]:
    """(seq, required slots) of the job's active tasks after `after_seq` (up to `count`), in seq order: what a
    job's queue holds, read a part at a time through (job_key, state, seq) without the rows' other columns."""
    query = (
        select(tasks.c.seq, tasks.c.required_slots)
        .where(tasks.c.job_key == job_key, tasks.c.state == "active", tasks.c.seq > after_seq)
        .order_by(tasks.c.seq)
        .limit(count)
    )
    return [(seq, slots) for seq, slots in conn.execute(query)]


def dependency_rows(conn: Connection, job_key: str) -> list[Row]:
    """The job's tasks that have not completed, as its dependency graph is rebuilt from them, in seq order,
    through (job_key, state, seq): seq, key, id, slots, state and dependency action, and the spec (its
    dependsOn) of only those that never started, the ones still gated; the others' spec is empty."""
    found = rows.tasks_in_states(conn, UNCOMPLETED, columns=_GRAPH_COLUMNS, job_key=job_key)
    gated = select(tasks.c.seq, tasks.c.spec).where(
        tasks.c.job_key == job_key, tasks.c.state == "active", tasks.c.attempt == 0
    )
    specs = {seq: spec for seq, spec in conn.execute(gated)}
    for row in found:
        row["spec"] = specs.get(row["seq"], {})
    return found


def completed_part(conn: Connection, job_key: str, after_seq: int, count: int) -> Sequence[SqlRow]:
    """The next `count` of the job's completed tasks after `after_seq`, in seq order, through (job_key, state,
    seq): seq, key, id, slots, state and dependency action as tuples (a million of them are read at ~1 us a
    row; as dicts, ~5). A dependency graph's rebuild reads them a part at a time: those that completed with
    satisfy leave only their integer (numeric ids: taskIdRanges), the others are its parents."""
    query = (
        select(*_GRAPH_COLUMNS)
        .where(tasks.c.job_key == job_key, tasks.c.state == "completed", tasks.c.seq > after_seq)
        .order_by(tasks.c.seq)
        .limit(count)
    )
    return conn.execute(query).all()


def records_of(conn: Connection, job_keys: Iterable[str]) -> list[Row]:
    """The jobs' preparation/release records, job by job through the primary key (job_key, node_id)."""
    found: list[Row] = []
    for job_key in job_keys:
        query = select(preparations).where(preparations.c.job_key == job_key).order_by(preparations.c.node_id)
        found.extend(dict(r) for r in conn.execute(query).mappings())
    return found
