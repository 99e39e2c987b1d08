"""Jobs, job schedules, pools, a pool's nodes and a job's prep/release records a page at a time (store.seek):
each list seeks on a key an index holds in order (a seq, a pool's key, a node's id), and its $filter's
columns become SQL. What a document computes (a node's busy state, a job's pool of record, a record's
step state, which the document leaves out while pending) is left to the caller's predicate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, Connection, Table, or_, select

from kiln.core import filters
from kiln.store import seek
from kiln.store.schema import job_schedules, jobs, nodes, pools, preparations

Keep = Callable[[seek.Row], bool]


def _times(table: Table, **names: str) -> dict[str, seek.Field]:
    return {path: seek.Field(table.c[column], "time") for path, column in names.items()}


def _entity(table: Table) -> dict[str, seek.Field]:
    """id, state and the times every top-level entity has."""
    return {
        "id": seek.Field(table.c.id, "string", key=table.c.key),
        "state": seek.Field(table.c.state, "string"),
        **_times(
            table,
            stateTransitionTime="state_transition_time",
            creationTime="creation_time",
            lastModified="last_modified",
        ),
    }


JOB_FIELDS: seek.Fields = {
    **_entity(jobs),
    **_times(jobs, **{"executionInfo/startTime": "creation_time", "executionInfo/endTime": "end_time"}),
}
SCHEDULE_FIELDS: seek.Fields = {
    **_entity(job_schedules),
    **_times(job_schedules, **{"executionInfo/endTime": "end_time"}),
}
POOL_FIELDS: seek.Fields = {
    **_entity(pools),
    "allocationState": seek.Field(pools.c.allocation_state, "string"),
    **_times(pools, allocationStateTransitionTime="allocation_state_transition_time"),
}
#: a node's state is computed (idle or running from its tasks): the predicate decides it
NODE_FIELDS: seek.Fields = _times(
    nodes, stateTransitionTime="state_transition_time", lastBootTime="last_boot_time", allocationTime="allocation_time"
)
#: a step's state is left out of the document while it is pending: the predicate decides it
PREPARATION_FIELDS: seek.Fields = {
    "poolId": seek.Field(preparations.c.pool_id, "string"),
    "nodeId": seek.Field(preparations.c.node_id, "string"),
    **{
        f"{info}/{name}": seek.Field(preparations.c[f"{prefix}_{column}"], kind)
        for info, prefix in (("jobPreparationTaskExecutionInfo", "prep"), ("jobReleaseTaskExecutionInfo", "release"))
        for name, column, kind in (
            ("startTime", "start_time", "time"),
            ("endTime", "end_time", "time"),
            ("exitCode", "exit_code", "int"),
            ("result", "result", "string"),
        )
    },
}


def _page(
    conn: Connection,
    table: Table,
    key: str,
    fields: seek.Fields,
    scope: list[ColumnElement[bool]],
    term: filters.Term | None,
    after: Any,
    count: int,
    keep: Keep,
) -> seek.Page:
    served, left = seek.conditions(term, fields)
    return seek.page(conn, select(table).where(*scope), served, table.c[key], after, count, keep if left else None)


def job_page(
    conn: Connection, term: filters.Term | None, after: int, count: int, keep: Keep, schedule_key: str | None = None
) -> seek.Page:
    """Jobs in the order they were added (those of one schedule: schedule_key)."""
    scope = [] if schedule_key is None else [jobs.c.schedule_key == schedule_key]
    return _page(conn, jobs, "seq", JOB_FIELDS, scope, term, after, count, keep)


def schedule_page(conn: Connection, term: filters.Term | None, after: int, count: int, keep: Keep) -> seek.Page:
    return _page(conn, job_schedules, "seq", SCHEDULE_FIELDS, [], term, after, count, keep)


def pool_page(conn: Connection, term: filters.Term | None, after: str, count: int, keep: Keep) -> seek.Page:
    """Pools in the order of their keys (their ids in lower case)."""
    return _page(conn, pools, "key", POOL_FIELDS, [], term, after, count, keep)


def node_page(
    conn: Connection, pool_key: str, term: filters.Term | None, after: str, count: int, keep: Keep
) -> seek.Page:
    """A pool's nodes in the order of their ids."""
    return _page(conn, nodes, "id", NODE_FIELDS, [nodes.c.pool_key == pool_key], term, after, count, keep)


def preparation_page(
    conn: Connection, job_key: str, term: filters.Term | None, after: str, count: int, keep: Keep
) -> seek.Page:
    """A job's (job, node) records whose preparation or release task has started, in the order of node ids."""
    started = or_(preparations.c.prep_state != "pending", preparations.c.release_state != "pending")
    scope = [preparations.c.job_key == job_key, started]
    return _page(conn, preparations, "node_id", PREPARATION_FIELDS, scope, term, after, count, keep)
