"""The scheduler's batched writes: every task change of a transaction, one executemany per set of columns.

This is the hot path of every task (its dispatch, its start, its end): each statement is compiled once
(store.prepared) and no task costs a statement or a read of its own. Each row is guarded like
rows.transition (its state and attempt before the transaction's first change of it); the rows changed
are counted against the rows given, and a shortfall is a conflict the caller rolls back.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Integer, bindparam, update

from kiln.store.prepared import Prepared
from kiln.store.rows import new_etag
from kiln.store.schema import nodes, tasks
from kiln.store.task_tally import Tally

#: Per-node totals the scheduler counts (node documents' totalTasksRun, totalTasksSucceeded).
NODE_COUNTERS = ("total_tasks_run", "total_tasks_succeeded")


@dataclass(slots=True)
class TaskChange:
    """A task's changes in one transaction, and the state, attempt and result its row had before the first
    of them (with its job and slots: its counters follow the change)."""

    state: str
    attempt: int
    values: dict[str, Any]
    job_key: str
    result: str | None
    required_slots: int


def change_tasks(conn: Connection, changes: Mapping[int, TaskChange]) -> bool:
    """Each task's changes (by seq), with a new ETag: one statement per set of columns changed, each row
    guarded by its state and attempt. False: some row had moved (a conflict; the caller rolls back)."""
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    tally = Tally()
    for seq, change in changes.items():
        after = (change.values.get("state", change.state), change.values.get("result", change.result))
        tally.shift(change.job_key, change.required_slots, (change.state, change.result), after)
        columns = tuple(sorted(change.values))
        shapes[columns].append(
            {
                **{f"v_{c}": change.values[c] for c in columns},
                "k_seq": seq,
                "k_state": change.state,
                "k_attempt": change.attempt,
                "v_etag": new_etag(),
            }
        )
    changed = sum(_task_update(columns).execute_many(conn, params) for columns, params in shapes.items())
    tally.write(conn)
    return changed == len(changes)


@functools.cache
def _task_update(columns: tuple[str, ...]) -> Prepared:
    return Prepared(
        update(tasks)
        .where(
            tasks.c.seq == bindparam("k_seq"),
            tasks.c.state == bindparam("k_state"),
            tasks.c.attempt == bindparam("k_attempt"),
        )
        .values({c: bindparam(f"v_{c}") for c in (*columns, "etag")})
    )


def add_to_node_counters(conn: Connection, increments: Mapping[tuple[str, str], int]) -> None:
    """(node_id, one of NODE_COUNTERS) -> increment: one statement for all the nodes."""
    by_node: dict[str, dict[str, Any]] = {}
    for (node_id, column), increment in increments.items():
        by_node.setdefault(node_id, {"k_id": node_id, **{f"by_{c}": 0 for c in NODE_COUNTERS}})[f"by_{column}"] += (
            increment
        )
    _NODE_COUNTERS_UPDATE.execute_many(conn, list(by_node.values()))


_NODE_COUNTERS_UPDATE = Prepared(
    update(nodes)
    .where(nodes.c.id == bindparam("k_id"))
    .values({c: nodes.c[c] + bindparam(f"by_{c}", type_=Integer) for c in NODE_COUNTERS})
)
