"""Queries, one small function each, named in Batch's words. They decide nothing.

State changes are guarded: `transition` writes a task's, node's or job's new state only while the stored
row is still in the state the change was computed from (core.lifecycle.transition's `current`), and a
task's only at the attempt it was computed for. A row that moved meanwhile is a conflict: nothing is
written and the caller hears of it (False), and decides what it means: a request that raced another
change answers 409; the scheduler, whose memory no longer matches the store, aborts its transaction.
`change` writes everything else and refuses to write those states unguarded.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import time
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BindParameter,
    Connection,
    Select,
    Table,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    null,
    select,
    update,
)
from sqlalchemy.sql.schema import ScalarElementColumnDefault

from kiln import story
from kiln.store import kept_dirs, statistics, task_tally
from kiln.store.prepared import Prepared
from kiln.store.schema import (
    counters,
    job_schedules,
    jobs,
    node_lifetimes,
    nodes,
    pools,
    preparations,
    subtasks,
    tasks,
    transfers,
    transitions,
)
from kiln.store.stories import node_own

Row = dict[str, Any]
_etag_counter = itertools.count()


def new_etag() -> str:
    """Unquoted and unique, shaped like the service's (0x8D...)."""
    return f"0x8D{time.time_ns() // 100:X}{next(_etag_counter) % 4096:03X}"


def _where(table: Table, keys: Mapping[str, Any]):
    return and_(*(table.c[name] == value for name, value in keys.items()))


def get(conn: Connection, table: Table, **keys: Any) -> Row | None:
    found = _get(table, tuple(keys)).rows(conn, {f"k_{name}": value for name, value in keys.items()})
    return found[0] if found else None


def reread(conn: Connection, table: Table, **keys: Any) -> Row:
    """A row as this transaction has just changed it: it exists, the transaction holds it."""
    row = get(conn, table, **keys)
    if row is None:
        raise LookupError(f"{table.name} {keys} is gone within the transaction that changed it")
    return row


@functools.cache
def _get(table: Table, names: tuple[str, ...]) -> Prepared:
    return Prepared(select(table).where(and_(*(table.c[name] == bindparam(f"k_{name}") for name in names))))


def find(
    conn: Connection, table: Table, order_by: Sequence[str] = (), window: tuple[int, int] | None = None, **keys: Any
) -> list[Row]:
    """window: (offset, count) of the ordered rows to read; None: all of them."""
    query = select(table).where(_where(table, keys)) if keys else select(table)
    query = query.order_by(*(table.c[name] for name in order_by))
    if window is not None:
        query = query.offset(window[0]).limit(window[1])
    return [dict(r) for r in conn.execute(query).mappings()]


def insert_rows(conn: Connection, table: Table, rows: Iterable[Row]) -> None:
    """Rows that all have the first one's columns; the table's defaults fill in the others."""
    rows = list(rows)
    if rows:
        defaults = _defaults(table, tuple(rows[0]))
        statement = _insert(table, (*rows[0], *defaults))
        statement.execute_many(conn, [{f"v_{c}": v for c, v in {**defaults, **row}.items()} for row in rows])
        if table is tasks:
            tally = task_tally.Tally()
            tally.add_rows(rows)
            tally.write(conn)


@functools.cache
def _defaults(table: Table, columns: tuple[str, ...]) -> dict[str, Any]:
    return {
        c.name: c.default.arg
        for c in table.columns
        if c.name not in columns and isinstance(c.default, ScalarElementColumnDefault)
    }


@functools.cache
def _insert(table: Table, columns: tuple[str, ...]) -> Prepared:
    return Prepared(insert(table).values({c: bindparam(f"v_{c}") for c in columns}))


#: Per table, what a change computed from a row expects to find stored (`transition` applies it only then):
#: the row's states, and the attempts a late result must not overtake.
GUARDS: dict[Table, tuple[str, ...]] = {
    tasks: ("state", "attempt"),
    nodes: ("state",),
    jobs: ("state",),
    pools: ("state", "allocation_state"),
    job_schedules: ("state",),
    subtasks: ("state",),
    preparations: ("prep_state", "prep_attempt", "release_state", "release_attempt"),
}
#: The state columns of each guarded table: they change only through `transition`.
STATES = {table: tuple(c for c in guard if c.endswith("state")) for table, guard in GUARDS.items()}
#: What of a task row its counters (task_tally) follow besides its state: written only where they are tallied.
TALLIED = ("result", "required_slots", "job_key")


def change(
    conn: Connection, table: Table, keys: Mapping[str, Any], changes: Mapping[str, Any], *, bump_etag: bool = False
) -> bool:
    """Columns other than a guarded state; False if the row is not there."""
    if not changes.keys().isdisjoint(STATES.get(table, ())):
        raise ValueError(f"a {table.name} state changes through transition(), guarded")
    if table is tasks and not changes.keys().isdisjoint(TALLIED):
        raise ValueError(f"a task's {TALLIED} change with its state, through transition() (its counters follow)")
    return _update(conn, table, keys, changes, bump_etag)


def transition(
    conn: Connection,
    table: Table,
    keys: Mapping[str, Any],
    row: Mapping[str, Any],
    changes: Mapping[str, Any],
    *,
    bump_etag: bool = False,
) -> bool:
    """`changes` computed from `row` as the caller read it: applied only while the stored row still has
    row's state (and a task row's attempt). False: a conflict, and nothing was written."""
    if table is tasks and not changes.keys().isdisjoint(("required_slots", "job_key")):
        raise ValueError("a task's job and required slots never change")
    done = _update(conn, table, {**keys, **guard(table, row)}, changes, bump_etag)
    if done and table is tasks:
        tally = task_tally.Tally()
        tally.move(row, changes.get("state", row["state"]), changes.get("result", row["result"]))
        tally.write(conn)
    return done


def guard(table: Table, row: Mapping[str, Any]) -> dict[str, Any]:
    """What of `row` a change computed from it expects to find stored (GUARDS)."""
    return {column: row[column] for column in GUARDS[table]}


def _update(
    conn: Connection, table: Table, keys: Mapping[str, Any], changes: Mapping[str, Any], bump_etag: bool
) -> bool:
    values = dict(changes)
    if bump_etag:
        values["etag"] = new_etag()
    if any(value is None for value in keys.values()):  # `IS NULL`, which a bound `=` is not
        return conn.execute(update(table).where(_where(table, keys)).values(**values)).rowcount == 1
    params = {**{f"k_{name}": value for name, value in keys.items()}, **{f"v_{c}": v for c, v in values.items()}}
    return _prepared_update(table, tuple(keys), tuple(values)).execute_many(conn, [params]) == 1


@functools.cache
def _prepared_update(table: Table, keys: tuple[str, ...], columns: tuple[str, ...]) -> Prepared:
    """One statement per shape of change: SQLAlchemy's per-execution work (a statement built, its cache key,
    its parameters) cost ten times the database's on a node's or a pool's transition."""
    where = and_(*(table.c[name] == bindparam(f"k_{name}") for name in keys))
    return Prepared(update(table).where(where).values({c: bindparam(f"v_{c}") for c in columns}))


def remove(conn: Connection, table: Table, **keys: Any) -> int:
    if table is tasks:
        raise ValueError("tasks go through delete_task or delete_job_rows (their counters follow)")
    if (scope := _STATISTICS_SCOPES.get(table.name)) is not None and "key" in keys:
        statistics.forget_owner(conn, scope, keys["key"])  # a pool or schedule of the same id starts afresh
    return conn.execute(delete(table).where(_where(table, keys))).rowcount


#: Tables whose rows own statistics (store.statistics), by name: their scope there.
_STATISTICS_SCOPES = {"pools": "pool", "job_schedules": "schedule"}


def insert_tasks(conn: Connection, job_key: str, rows: Sequence[Row], at: datetime) -> None:
    """A job's new tasks, `active`: each row gets its seq, and its story begins."""
    insert_rows(conn, tasks, rows)
    if rows:
        inserted = task_seqs(conn, job_key, [row["key"] for row in rows])
        for row in rows:
            row["seq"] = inserted[row["key"]]
        story.created("task", rows, "active", at)


def next_value(conn: Connection, name: str) -> int:
    """A persistent counter (job creation order)."""
    if conn.execute(_COUNTER_UP, {"k_name": name}).rowcount:
        return conn.execute(_COUNTER_VALUE, {"k_name": name}).scalar_one()
    conn.execute(insert(counters).values(name=name, value=1))
    return 1


#: built once: building them was half of a job create's time in the store
_COUNTER_UP = update(counters).where(counters.c.name == bindparam("k_name")).values(value=counters.c.value + 1)
_COUNTER_VALUE = select(counters.c.value).where(counters.c.name == bindparam("k_name"))


def task_counts(conn: Connection, job_key: str) -> list[Row]:
    """The job's tasks and slots by (state, result): its few counter rows, whatever its size."""
    return task_tally.read(conn, job_key)


def count_by_state(conn: Connection, table: Table) -> dict[str, int]:
    """How many rows of the table are in each state (those with none are left out)."""
    query = select(table.c.state, func.count()).group_by(table.c.state)
    return {state: count for state, count in conn.execute(query).tuples()}


def add_job(conn: Connection, job: Row, manager: Row | None) -> None:
    """Insert a new job and its job manager task (None: it has none) together, giving each its seq."""
    job["seq"] = next_value(conn, "job")
    insert_rows(conn, jobs, [job])
    if manager is not None:
        insert_tasks(conn, job["key"], [manager], manager["creation_time"])


def current_nodes_by_pool(conn: Connection) -> dict[str, tuple[int, int]]:
    """How many nodes each pool has, by pool key: (currentDedicatedNodes, currentLowPriorityNodes)."""
    query = select(nodes.c.pool_key, nodes.c.is_dedicated, func.count()).group_by(
        nodes.c.pool_key, nodes.c.is_dedicated
    )
    counts: dict[str, tuple[int, int]] = {}
    for key, dedicated, count in conn.execute(query):
        known = counts.get(key, (0, 0))
        counts[key] = (count, known[1]) if dedicated else (known[0], count)
    return counts


def pool_has_node_outside(conn: Connection, pool_key: str, states: Iterable[str], among: Container[str]) -> bool:
    """Whether one of the pool's nodes `among` these is in none of `states`: whether a resize is done, read up to
    the first such node rather than all of them (ids only)."""
    with conn.execute(_nodes_outside(tuple(states)), {"pool_key": pool_key}) as found:
        return any(node_id in among for node_id in found.scalars())


@functools.cache
def _nodes_outside(states: tuple[str, ...]) -> Select[tuple[str]]:
    """Built once: building it cost more than running it, once per batch of arrivals."""
    return select(nodes.c.id).where(nodes.c.pool_key == bindparam("pool_key"), nodes.c.state.not_in(states))


def running_tasks_by_node(conn: Connection, node_ids: Sequence[str] | None = None) -> dict[str, tuple[int, int]]:
    """(runningTasksCount, runningTaskSlotsCount) of each node with job tasks on it; prep and release count for
    neither, and a running subtask of a multi-instance task holds one slot of its node. node_ids: of these
    nodes only, each sought in ix_tasks_node_state (None: every node, reading the index through)."""
    on_task = tasks.c.node_id.is_not(None) if node_ids is None else tasks.c.node_id.in_(node_ids)
    query = (
        select(tasks.c.node_id, func.count(), func.sum(tasks.c.required_slots))
        .where(tasks.c.state.in_(["running", "preparing"]), on_task)
        .group_by(tasks.c.node_id)
    )
    running = {node_id: (count, slots or 0) for node_id, count, slots in conn.execute(query)}
    on_subtask = [] if node_ids is None else [subtasks.c.node_id.in_(node_ids)]
    query = (
        select(subtasks.c.node_id, func.count())
        .where(subtasks.c.state == "running", subtasks.c.id > 0, *on_subtask)
        .group_by(subtasks.c.node_id)
    )
    for node_id, count in conn.execute(query):
        tasks_count, slots = running.get(node_id, (0, 0))
        running[node_id] = (tasks_count + count, slots + count)
    return running


#: What of a task's row can change while it runs on a node (its own update: the retry limit; any
#: requeue or end: state and attempt). The rest of the row the scheduler keeps from the dispatch.
RUNNING_COLUMNS = ("seq", "state", "attempt", "retry_count", "max_retries")

#: tasks_by_seq reads at most this many rows per statement
SEQ_CHUNK = 32
#: task_seqs looks up at most this many keys per statement (a task collection's size)
KEY_CHUNK = 100


def _rows_in(
    conn: Connection, statement: Callable[[int], Prepared], values: Sequence[Any], chunk: int, **fixed: Any
) -> list[Row]:
    """Rows of statement(n), n values at a time bound as in0..in{n-1}: one statement per list length,
    compiled once (an expanding IN would be rendered again on every call, and these are hot paths)."""
    found: list[Row] = []
    for start in range(0, len(values), chunk):
        part = values[start : start + chunk]
        found += statement(len(part)).rows(conn, {**fixed, **{f"in{i}": value for i, value in enumerate(part)}})
    return found


def _in_list(count: int) -> list[BindParameter]:
    return [bindparam(f"in{i}") for i in range(count)]


@functools.cache
def _tasks_by_seq(columns: tuple[str, ...] | None, count: int) -> Prepared:
    query = select(tasks) if columns is None else select(*(tasks.c[c] for c in columns))
    return Prepared(query.where(tasks.c.seq.in_(_in_list(count))))


def tasks_by_seq(conn: Connection, seqs: Sequence[int], columns: tuple[str, ...] | None = None) -> list[Row]:
    """The tasks' rows, or only these columns of them."""
    return _rows_in(conn, functools.partial(_tasks_by_seq, columns), list(seqs), SEQ_CHUNK)


@functools.cache
def _task_seqs(count: int) -> Prepared:
    return Prepared(
        select(tasks.c.key, tasks.c.seq).where(
            tasks.c.job_key == bindparam("job_key"), tasks.c.key.in_(_in_list(count))
        )
    )


def task_seqs(conn: Connection, job_key: str, keys: Sequence[str]) -> dict[str, int]:
    """seq of each of these task keys that exists in the job (one indexed lookup, no row decoding)."""
    return {row["key"]: row["seq"] for row in _rows_in(conn, _task_seqs, list(keys), KEY_CHUNK, job_key=job_key)}


@functools.cache
def _task_outcomes(count: int) -> Prepared:
    return Prepared(
        select(tasks.c.key, tasks.c.state, tasks.c.dependency_action).where(
            tasks.c.job_key == bindparam("job_key"), tasks.c.key.in_(_in_list(count))
        )
    )


def task_outcomes(conn: Connection, job_key: str, keys: Sequence[str]) -> dict[str, Row]:
    """State and dependencyAction of each of these task keys that exists in the job (a dependent's parents)."""
    return {row["key"]: row for row in _rows_in(conn, _task_outcomes, list(keys), KEY_CHUNK, job_key=job_key)}


def tasks_in_states(
    conn: Connection, states: Sequence[str], *, columns: Sequence[Any] = (tasks,), **keys: Any
) -> list[Row]:
    """In seq order (with `columns` only, seq among them). One query per state: with `state IN (...) ORDER BY
    seq` SQLite walks a job's whole (job_key, seq) index to skip the sort (1.4 s for a job of a million tasks,
    none of them on a node), where `state = ?` reads (job_key, state, seq) in order."""
    found = []
    for state in states:
        query = select(*columns).where(tasks.c.state == state)
        if keys:
            query = query.where(_where(tasks, keys))
        found.append([dict(r) for r in conn.execute(query.order_by(tasks.c.seq)).mappings()])
    return list(heapq.merge(*found, key=lambda row: row["seq"]))


def mark_sent_ahead(conn: Connection, at: datetime, sent: Sequence[tuple[int, str]]) -> None:
    """(task seq, node id) of the tasks sent ahead in this transaction: one prepared statement for all of them,
    as it is on most tasks' path under load."""
    _MARK_SENT_AHEAD.execute_many(conn, [{"k_seq": seq, "v_node": node_id, "v_at": at} for seq, node_id in sent])


_MARK_SENT_AHEAD = Prepared(
    update(tasks)
    .where(tasks.c.seq == bindparam("k_seq"))
    .values(sent_ahead_node=bindparam("v_node"), sent_ahead_at=bindparam("v_at"))
)


def move_attempts_on(conn: Connection, attempts: Sequence[tuple[int, int]]) -> None:
    """(task seq, attempt) of tasks sent ahead and taken back: each row takes the attempt its withdrawn step
    had and is no longer marked as sent ahead; one prepared statement for all (a withdrawal takes back many)."""
    _MOVE_ATTEMPTS_ON.execute_many(conn, [{"k_seq": seq, "v_attempt": attempt} for seq, attempt in attempts])


_MOVE_ATTEMPTS_ON = Prepared(
    update(tasks)
    .where(tasks.c.seq == bindparam("k_seq"))
    .values(attempt=bindparam("v_attempt"), sent_ahead_node=null(), sent_ahead_at=null())
)


def tasks_sent_ahead(conn: Connection, node_id: str | None = None) -> list[Row]:
    """Tasks still marked as sent ahead (to `node_id`, if given): their start was never reported."""
    query = select(tasks).where(tasks.c.sent_ahead_at.is_not(None))
    if node_id is not None:
        query = query.where(tasks.c.sent_ahead_node == node_id)
    return [dict(r) for r in conn.execute(query).mappings()]


def count_tasks_in_states(conn: Connection, job_key: str, states: Sequence[str]) -> int:
    """How many of a job's tasks are in these states (maxParallelTasks counts those on nodes)."""
    query = select(func.count()).select_from(tasks).where(tasks.c.job_key == job_key, tasks.c.state.in_(list(states)))
    return conn.execute(query).scalar_one()


def all_tasks_completed(conn: Connection, job_key: str) -> bool:
    """Whether every task of the job is completed (onAllTasksComplete): one indexed probe."""
    query = select(tasks.c.seq).where(tasks.c.job_key == job_key, tasks.c.state != "completed").limit(1)
    return conn.execute(query).first() is None


def active_schedule_job(conn: Connection, schedule_key: str) -> Row | None:
    """The schedule's job that has not completed yet (at most one)."""
    query = (
        select(jobs)
        .where(jobs.c.schedule_key == schedule_key, jobs.c.state != "completed")
        .order_by(jobs.c.seq)
        .limit(1)
    )
    row = conn.execute(query).mappings().first()
    return dict(row) if row else None


def remove_unfinished_subtasks(conn: Connection) -> None:
    """The instance rows of every multi-instance task that has not completed (after a restart those
    tasks are active again, and their last attempt's instances are gone). Each instance row looks up its task
    by key: the unfinished tasks (a million queued ones, say) are not gathered."""
    unfinished = exists().where(tasks.c.seq == subtasks.c.task_seq, tasks.c.state != "completed")
    conn.execute(delete(subtasks).where(unfinished))


def delete_task(conn: Connection, task_seq: int) -> None:
    """A task and its story."""
    story.gone(task_seq=task_seq)
    counted = (tasks.c.job_key, tasks.c.state, tasks.c.result, tasks.c.required_slots)
    row = conn.execute(select(*counted).where(tasks.c.seq == task_seq)).mappings().first()
    if row is not None:
        tally = task_tally.Tally()
        tally.add_rows([dict(row)], -1)
        tally.write(conn)
    statistics.forget_task(conn, task_seq)
    for table, column in ((tasks, tasks.c.seq), (transitions, transitions.c.task_seq)):
        conn.execute(delete(table).where(column == task_seq))


def remove_node(conn: Connection, node_id: str) -> None:
    """A node and its own transitions (its prep/release records' go with their jobs). Found through the
    task index's NULL part, which holds only the few records that are not a task's."""
    story.gone(kind="node", node_id=node_id)
    _record_lifetime(conn, node_id)
    conn.execute(delete(nodes).where(nodes.c.id == node_id))
    conn.execute(delete(transitions).where(node_own(node_id)))


def _record_lifetime(conn: Connection, node_id: str) -> None:
    """The node's time in its pool, kept after the node is gone (the pool's usage metrics count it)."""
    query = (
        select(nodes.c.allocation_time, pools.c.id, pools.c.spec)
        .join(pools, pools.c.key == nodes.c.pool_key)
        .where(nodes.c.id == node_id)
    )
    found = conn.execute(query).first()
    if found is not None:
        allocated, pool_id, spec = found
        lifetime = {"node_id": node_id, "pool_id": pool_id, "vm_size": spec.get("vmSize") or ""}
        lifetime.update(start_time=allocated, end_time=datetime.now(UTC))
        conn.execute(delete(node_lifetimes).where(node_lifetimes.c.node_id == node_id))
        conn.execute(insert(node_lifetimes).values(lifetime))


def node_lifetimes_since(conn: Connection, start: datetime) -> list[tuple[str, str, datetime, datetime | None]]:
    """(pool id, vmSize, allocated, left or None) of every node that was in a pool at `start` or later."""
    ended = select(
        node_lifetimes.c.pool_id, node_lifetimes.c.vm_size, node_lifetimes.c.start_time, node_lifetimes.c.end_time
    ).where(node_lifetimes.c.end_time >= start)
    found = [tuple(row) for row in conn.execute(ended)]
    current = select(pools.c.id, pools.c.spec, nodes.c.allocation_time).join(pools, pools.c.key == nodes.c.pool_key)
    found += [
        (pool_id, spec.get("vmSize") or "", allocated, None) for pool_id, spec, allocated in conn.execute(current)
    ]
    return found


def delete_job_rows(conn: Connection, job_key: str) -> None:
    """The job, its tasks and their stories, its prep/release records: all found by index."""
    story.gone(job_key=job_key)
    job_tasks = select(tasks.c.seq).where(tasks.c.job_key == job_key)
    conn.execute(delete(transitions).where(transitions.c.task_seq.in_(job_tasks)))
    conn.execute(delete(transitions).where(transitions.c.task_seq.is_(None), transitions.c.job_key == job_key))
    for table in (tasks, preparations, subtasks, transfers):
        conn.execute(delete(table).where(table.c.job_key == job_key))
    conn.execute(delete(jobs).where(jobs.c.key == job_key))
    task_tally.forget_job(conn, job_key)
    statistics.forget_job(conn, job_key)
    kept_dirs.forget(conn, job_key)


__all__ = [
    "Table",
    "jobs",
    "job_schedules",
    "nodes",
    "pools",
    "preparations",
    "subtasks",
    "tasks",
    "get",
    "find",
    "insert_rows",
    "insert_tasks",
    "change",
    "transition",
    "guard",
    "GUARDS",
    "STATES",
    "remove",
    "next_value",
    "task_counts",
    "add_job",
    "current_nodes_by_pool",
    "running_tasks_by_node",
    "task_seqs",
    "task_outcomes",
    "tasks_by_seq",
    "RUNNING_COLUMNS",
    "tasks_in_states",
    "mark_sent_ahead",
    "tasks_sent_ahead",
    "count_tasks_in_states",
    "all_tasks_completed",
    "active_schedule_job",
    "remove_unfinished_subtasks",
    "delete_task",
    "remove_node",
    "delete_job_rows",
    "new_etag",
]


def recent_tasks(conn: Connection, node_id: str, limit: int) -> list[Row]:
    """The tasks that last changed state on the node (a node's recentTasks), latest first, with their job's id."""
    return recent_tasks_by_node(conn, [node_id], limit).get(node_id, [])


def recent_tasks_by_node(conn: Connection, node_ids: Sequence[str], limit: int) -> dict[str, list[Row]]:
    """recent_tasks of each node, in one statement for a page of nodes rather than one per node (nodes without
    tasks are left out)."""
    latest_first = (tasks.c.state_transition_time.desc(), tasks.c.seq.desc())
    ranked = (
        select(
            tasks,
            jobs.c.id.label("job_id"),
            func.row_number().over(partition_by=tasks.c.node_id, order_by=latest_first).label("rank"),
        )
        .join(jobs, jobs.c.key == tasks.c.job_key)
        .where(tasks.c.node_id.in_(node_ids))
        .subquery()
    )
    columns = [column for column in ranked.c if column.name != "rank"]
    query = select(*columns).where(ranked.c.rank <= limit).order_by(ranked.c.node_id, ranked.c.rank)
    found: dict[str, list[Row]] = {}
    for row in conn.execute(query):
        found.setdefault(row.node_id, []).append(dict(row._mapping))
    return found
