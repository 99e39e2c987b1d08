"""A job's tasks a page at a time, by index (store.seek): each page seeks past the last seq of the one before,
so page 50 costs what page 1 does, and a filter reads only the rows it keeps.

Indexes, each ending in seq so that a filter's equality hands rows over in seq order and LIMIT stops the
read: ix_tasks_job_seq (job_key, seq) for no filter and for what only a row can tell, ix_tasks_job_state
(job_key, state, seq), ix_tasks_job_result (job_key, result, seq), ix_tasks_job_exit (job_key, exit_code,
seq); an id is found by its key (uq_tasks_job_key); times compare on the rows of the seq walk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, select

from kiln.core import filters
from kiln.store import seek
from kiln.store.schema import tasks

_LAST_MODIFIED = seek.Field(tasks.c.last_modified, "time")
#: the task list's filterable properties (api.odata.TASK_FILTERS) that are columns
TASK_FIELDS: seek.Fields = {
    "id": seek.Field(tasks.c.id, "string", key=tasks.c.key),
    "state": seek.Field(tasks.c.state, "string"),
    "stateTransitionTime": seek.Field(tasks.c.state_transition_time, "time"),
    "creationTime": seek.Field(tasks.c.creation_time, "time"),
    "lastModified": _LAST_MODIFIED,
    "lastModifiedTime": _LAST_MODIFIED,
    "executionInfo/startTime": seek.Field(tasks.c.start_time, "time"),
    "executionInfo/endTime": seek.Field(tasks.c.end_time, "time"),
    "executionInfo/exitCode": seek.Field(tasks.c.exit_code, "int"),
    "executionInfo/result": seek.Field(tasks.c.result, "string"),
}


#: properties whose equality an index narrows to the matching rows, in seq order
INDEXED = frozenset({"state", "executionInfo/result", "executionInfo/exitCode", "id"})


def _parts(
    job_key: str, term: filters.Term | None, columns: frozenset[str] | None = None
) -> tuple[Select, list[ColumnElement[bool]], bool]:
    """(the job's tasks, the SQL part of `term`, whether a part is left to the predicate). columns: those to
    read (None: all); the predicate reads them all."""
    served, left = seek.conditions(term, TASK_FIELDS)
    read = tasks.columns if columns is None or left else [c for c in tasks.columns if c.name in columns]
    return select(*read).where(tasks.c.job_key == job_key), served, left


def page_query(job_key: str, term: filters.Term | None) -> tuple[Select, bool]:
    """(the job's tasks that the SQL part of `term` keeps, whether a part is left to the predicate)."""
    scope, served, left = _parts(job_key, term)
    return scope.where(*served), left


def narrowed(term: filters.Term | None) -> bool:
    """Whether an index hands over only the rows `term` keeps (or all of them, with no filter): otherwise a
    page walks the job's seq index, and looks at most seek.SPAN seqs on."""
    if term is None:
        return True
    parts = term.parts if isinstance(term, filters.AllOf) else (term,)
    return any(
        isinstance(part, filters.Compare)
        and part.op == "eq"
        and part.path in INDEXED
        and seek.condition(part, TASK_FIELDS) is not None
        for part in parts
    )


def task_page(
    conn: Connection,
    job_key: str,
    term: filters.Term | None,
    after_seq: int,
    count: int,
    matches: Callable[[dict[str, Any]], bool],
    columns: frozenset[str] | None = None,
) -> seek.Page:
    """Up to `count` of the job's tasks after `after_seq` that `term` keeps; matches: the whole filter on a
    row, for what SQL cannot tell; columns: those to read, besides seq (None: all; all where a part of the
    filter is left to `matches`)."""
    scope, served, left = _parts(job_key, term, None if columns is None else columns | {"seq"})
    span = None if narrowed(term) else seek.SPAN
    return seek.page(conn, scope, served, tasks.c.seq, after_seq, count, matches if left else None, span)


def explain(conn: Connection, query: Select) -> list[str]:
    """The database's plan for `query` (SQLite's EXPLAIN QUERY PLAN details, PostgreSQL's EXPLAIN lines)."""
    compiled = query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
    if conn.dialect.name == "sqlite":
        return [row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}")]
    return [row[0] for row in conn.exec_driver_sql(f"EXPLAIN {compiled}")]
