"""Statistics kept as counter rows: each finished attempt of a task adds what its processes used to the task's
row (task_stats) and to its owners' rows (usage_stats: its job, the job's schedule, its pool, the account).

Like store.task_tally, a Tally gathers a whole transaction's additions and writes them in one executemany
upsert per table, in the transaction that ends the tasks: a rollback takes both back, and a restart finds
them as they were committed.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, delete, func, select

from kiln.store.prepared import Prepared, upsert_base
from kiln.store.schema import task_stats, usage_stats

#: What a task's attempt adds to its row and its owners' rows.
USAGE = ("user_cpu", "kernel_cpu", "wall_clock", "read_ops", "write_ops", "read_bytes", "write_bytes")
#: What only owners count (peak_rss is a maximum, not a sum).
OWNER_COUNTERS = (*USAGE, "wait", "succeeded", "failed", "retries")
#: (scope, key) of an owner's row
Owner = tuple[str, str]
ACCOUNT: Owner = ("account", "")


class Tally:
    """Additions by task (seq: job key, counters) and by owner, with the time they were measured."""

    def __init__(self) -> None:
        self._tasks: dict[int, dict[str, Any]] = {}
        self._owners: dict[Owner, dict[str, Any]] = {}

    def add_task(self, seq: int, job_key: str, usage: Mapping[str, float], now: datetime) -> None:
        row = self._tasks.setdefault(seq, {"task_seq": seq, "job_key": job_key, **dict.fromkeys(USAGE, 0)})
        _add(row, usage, USAGE, now)

    def add_owners(self, owners: Iterable[Owner], counters: Mapping[str, float], peak_rss: int, now: datetime) -> None:
        for scope, key in owners:
            zero = {"scope": scope, "key": key, "start_time": now, "peak_rss": 0, **dict.fromkeys(OWNER_COUNTERS, 0)}
            row = self._owners.setdefault((scope, key), zero)
            _add(row, counters, OWNER_COUNTERS, now)
            row["peak_rss"] = max(row["peak_rss"], peak_rss)

    def write(self, conn: Connection) -> None:
        tasks, owners = list(self._tasks.values()), list(self._owners.values())
        self._tasks.clear()
        self._owners.clear()
        if tasks:
            _upsert(conn.dialect.name, "task_stats").execute_many(conn, tasks)
        if owners:
            _upsert(conn.dialect.name, "usage_stats").execute_many(conn, owners)


def _add(row: dict[str, Any], values: Mapping[str, float], names: Sequence[str], now: datetime) -> None:
    for name in names:
        row[name] += values.get(name, 0)
    row["last_update_time"] = now


_TABLES: dict[str, tuple[Table, tuple[str, ...], tuple[str, ...]]] = {
    "task_stats": (task_stats, ("task_seq",), USAGE),
    "usage_stats": (usage_stats, ("scope", "key"), OWNER_COUNTERS),
}


@functools.cache
def _upsert(dialect: str, name: str) -> Prepared:
    """Add to a row's counters, creating it at the first addition (start_time stays the first one's)."""
    table, keys, summed = _TABLES[name]
    statement = upsert_base(table, dialect)
    changes: dict[str, Any] = {name: table.c[name] + statement.excluded[name] for name in summed}
    changes["last_update_time"] = statement.excluded.last_update_time
    if "peak_rss" in table.c:
        larger = func.greatest if dialect == "postgresql" else func.max  # SQLite's max of two is a scalar
        changes["peak_rss"] = larger(table.c.peak_rss, statement.excluded.peak_rss)
    return Prepared(statement.on_conflict_do_update(index_elements=list(keys), set_=changes))


def tasks(conn: Connection, seqs: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The rows of those of these tasks that have run, by seq."""
    if not seqs:
        return {}
    found = conn.execute(select(task_stats).where(task_stats.c.task_seq.in_(list(seqs)))).mappings()
    return {row["task_seq"]: dict(row) for row in found}


def owner(conn: Connection, scope: str, key: str) -> dict[str, Any] | None:
    """An owner's row; None until one of its tasks has run."""
    found = conn.execute(select(usage_stats).where(usage_stats.c.scope == scope, usage_stats.c.key == key))
    row = found.mappings().first()
    return None if row is None else dict(row)


def owners(conn: Connection, scope: str, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Rows of these owners of one scope, by key."""
    if not keys:
        return {}
    query = select(usage_stats).where(usage_stats.c.scope == scope, usage_stats.c.key.in_(list(keys)))
    return {row["key"]: dict(row) for row in conn.execute(query).mappings()}


def forget_task(conn: Connection, seq: int) -> None:
    """A deleted task's row (a later task may get its seq)."""
    conn.execute(delete(task_stats).where(task_stats.c.task_seq == seq))


def forget_job(conn: Connection, job_key: str) -> None:
    """A deleted job's row and its tasks' rows."""
    conn.execute(delete(task_stats).where(task_stats.c.job_key == job_key))
    forget_owner(conn, "job", job_key)


def forget_owner(conn: Connection, scope: str, key: str) -> None:
    """A deleted pool's or schedule's row: a new one of the same id starts from nothing."""
    conn.execute(delete(usage_stats).where(usage_stats.c.scope == scope, usage_stats.c.key == key))
