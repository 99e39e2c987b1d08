"""Pools: add, read, list, update, delete, resize."""

from __future__ import annotations

from sqlalchemy import Connection

from kiln.commands import applications, autoscale
from kiln.commands.control import Check, Control, Matches, Row
from kiln.core import filters
from kiln.core import pool as pool_rules
from kiln.core.pool import AllocationState, PoolState
from kiln.errors import Conflict, NotFound
from kiln.store import lists, seek
from kiln.store import rows as db
from kiln.wire import ids
from kiln.wire.models import PoolAdd
from kiln.wire.times import now

#: (currentDedicatedNodes, currentLowPriorityNodes) of a pool
NodeCounts = tuple[int, int]


def load(conn: Connection, pool_id: str) -> Row:
    row = db.get(conn, db.pools, key=ids.key(pool_id))
    if row is None:
        raise NotFound("The specified pool does not exist.", code="PoolNotFound")
    return row


def check_not_deleting(row: Row) -> None:
    if row["state"] == PoolState.DELETING:
        raise Conflict(
            "The specified pool has been marked for deletion and is being reclaimed.", code="PoolBeingDeleted"
        )


async def add(control: Control, spec: PoolAdd) -> Row:
    doc = spec.materialize()
    sizing = autoscale.first_run(control, doc) if spec.enable_auto_scale else None
    row = pool_rules.new_row(
        spec.id,
        doc,
        target_dedicated=sizing.target_dedicated if sizing else spec.target_dedicated_nodes,
        target_low_priority=sizing.target_low_priority if sizing else spec.target_low_priority_nodes,
        slots_per_node=spec.task_slots_per_node,
        now=now(),
        etag=db.new_etag(),
    )
    applications.check_pool(control, row["spec"])

    def insert(conn: Connection) -> None:
        if db.get(conn, db.pools, key=row["key"]) is not None:
            raise Conflict("The specified pool already exists.", code="PoolExists")
        db.insert_rows(conn, db.pools, [row])

    await control.database.write(insert)
    await control.scheduler.create_pool(row)
    if sizing:
        autoscale.arm(control, row)
    return row


async def list_page(control: Control, term: filters.Term | None, matches: Matches, after: str, count: int) -> seek.Page:
    """A page of the pools, each with its numbers of nodes, in the order of their keys after `after`; matches:
    the whole filter on (pool, node counts)."""

    def read(conn: Connection) -> seek.Page:
        counts = db.current_nodes_by_pool(conn)
        page = lists.pool_page(conn, term, after, count, lambda row: matches((row, counts.get(row["key"], (0, 0)))))
        return seek.Page([(row, counts.get(row["key"], (0, 0))) for row in page.rows], page.after)

    return await control.database.read(read)


async def get(control: Control, pool_id: str) -> tuple[Row, NodeCounts]:
    """The pool and its numbers of nodes."""

    def read(conn: Connection) -> tuple[Row, NodeCounts]:
        row = load(conn, pool_id)
        return row, db.current_nodes_by_pool(conn).get(row["key"], (0, 0))

    return await control.database.read(read)


async def delete(control: Control, pool_id: str, check: Check) -> None:
    row, _ = await get(control, pool_id)
    check(row)
    check_not_deleting(row)
    control.scheduler.autoscale_disabled(row["key"], pool_deleted=True)
    await control.scheduler.delete_pool(row["key"])


async def resize(
    control: Control,
    pool_id: str,
    target_dedicated: int | None,
    check: Check,
    target_low_priority: int | None = None,
    option: str = "requeue",
) -> None:
    """Resize towards the targets (None: keep the pool's); only a steady pool may resize. `option`
    (nodeDeallocationOption) says what becomes of the tasks of nodes that leave."""
    row, _ = await get(control, pool_id)
    check(row)
    autoscale.check_not_autoscaled(row)
    if row["allocation_state"] != AllocationState.STEADY:
        raise Conflict(
            "The pool is already resizing; wait until its allocation state is steady.", code="PoolBeingResized"
        )
    dedicated = row["target_dedicated_nodes"] if target_dedicated is None else target_dedicated
    low_priority = row["target_low_priority_nodes"] if target_low_priority is None else target_low_priority
    await control.scheduler.resize_pool(row["key"], dedicated, low_priority, option)
