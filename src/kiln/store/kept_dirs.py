"""Directories of finished steps kept on their nodes until their retentionTime passes.

A row is written in the transaction that ends its step and read back in due order by the scheduler's one
sweep (scheduler/retention.py): memory holds only the next due time, however long the history.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import Connection, and_, bindparam, delete, func, select, update

from kiln.store.prepared import Prepared, upsert_base
from kiln.store.schema import kept_dirs


class Kept(NamedTuple):
    node_id: str
    path: str
    job_key: str
    due: datetime


def keep(conn: Connection, kept: Iterable[Kept]) -> None:
    """Keep each directory until its due time (a directory kept again takes the new time)."""
    _keep(conn.dialect.name).execute_many(conn, [k._asdict() for k in kept])


def due(conn: Connection, until: datetime, count: int) -> list[Kept]:
    """Up to `count` directories whose time has come, earliest first (through ix_kept_dirs_due)."""
    query = select(kept_dirs.c.node_id, kept_dirs.c.path, kept_dirs.c.job_key, kept_dirs.c.due)
    query = query.where(kept_dirs.c.due <= until).order_by(kept_dirs.c.due).limit(count)
    return [Kept(*row) for row in conn.execute(query)]


def next_due(conn: Connection) -> datetime | None:
    return conn.execute(select(func.min(kept_dirs.c.due))).scalar()


def swept(conn: Connection, kept: Iterable[Kept]) -> None:
    """The sweep deleted these directories; a row kept again since (a new due time) stays."""
    _SWEPT.execute_many(conn, [k._asdict() for k in kept])


def postpone(conn: Connection, kept: Iterable[Kept], until: datetime) -> None:
    """The sweep could not delete these (their node not up yet, say): try again at `until`; a row kept again
    since (a new due time) keeps its own."""
    _POSTPONED.execute_many(conn, [{**k._asdict(), "until": until} for k in kept])


def release(conn: Connection, node_id: str, path: str) -> None:
    """The directory is in use again (a reactivated task reuses it): no cleanup under it."""
    conn.execute(delete(kept_dirs).where(kept_dirs.c.node_id == node_id, kept_dirs.c.path == path))


def forget(conn: Connection, job_key: str, path: str | None = None) -> None:
    """A deleted job's rows, or a deleted task's (its directories are removed at once): a later job or task of
    the same id must not lose its directories at the old due time."""
    where = kept_dirs.c.job_key == job_key
    if path is not None:
        where = and_(where, kept_dirs.c.path == path)
    conn.execute(delete(kept_dirs).where(where))


def move(conn: Connection, job_key: str, path: str, due: datetime) -> None:
    """A new retentionTime for a completed task: its directories on every node it ran on go at the new time."""
    conn.execute(update(kept_dirs).where(kept_dirs.c.job_key == job_key, kept_dirs.c.path == path).values(due=due))


@functools.cache
def _keep(dialect: str) -> Prepared:
    statement = upsert_base(kept_dirs, dialect)
    return Prepared(
        statement.on_conflict_do_update(
            index_elements=[kept_dirs.c.node_id, kept_dirs.c.path],
            set_={"job_key": statement.excluded.job_key, "due": statement.excluded.due},
        )
    )


_SWEPT = Prepared(
    delete(kept_dirs).where(
        kept_dirs.c.node_id == bindparam("node_id"),
        kept_dirs.c.path == bindparam("path"),
        kept_dirs.c.due == bindparam("due", type_=kept_dirs.c.due.type),
    )
)

_POSTPONED = Prepared(
    update(kept_dirs)
    .where(
        kept_dirs.c.node_id == bindparam("node_id"),
        kept_dirs.c.path == bindparam("path"),
        kept_dirs.c.due == bindparam("due", type_=kept_dirs.c.due.type),
    )
    .values(due=bindparam("until", type_=kept_dirs.c.due.type))
)
