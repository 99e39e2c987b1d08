"""Pool updates: PATCH (the fields given) and updateproperties (a replace)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from kiln.commands import applications, pools
from kiln.commands.control import Check, Control, Row
from kiln.core.pool_updates import check_changeable, updated_spec
from kiln.store import rows as db
from kiln.wire.pool_updates import EMPTY_POOL_ONLY, PoolPatch, PoolReplace
from kiln.wire.times import now


async def patch(control: Control, pool_id: str, body: PoolPatch, check: Check) -> Row:
    changes = body.changes()
    if "applicationPackageReferences" in changes:
        applications.check_pool(control, changes)
    return await _write(control, pool_id, changes, check)


async def replace(control: Control, pool_id: str, body: PoolReplace, check: Check) -> Row:
    changes = body.changes()
    applications.check_pool(control, changes)
    return await _write(control, pool_id, changes, check)


async def _write(control: Control, pool_id: str, changes: dict[str, Any], check: Check) -> Row:
    """Stored, and the scheduler's copy of the pool replaced in the same turn of its lock: new nodes, placement
    and the steps built from now on see the new spec (nodes already up keep what they were given)."""
    scheduler = control.scheduler

    def write(conn: Connection) -> Row:
        row = pools.load(conn, pool_id)
        check(row)
        pools.check_not_deleting(row)
        check_changeable(changes, EMPTY_POOL_ONLY, sum(db.current_nodes_by_pool(conn).get(row["key"], (0, 0))))
        columns: dict[str, Any] = {"spec": updated_spec(row["spec"], changes), "last_modified": now()}
        if "taskSlotsPerNode" in changes:
            columns["task_slots_per_node"] = changes["taskSlotsPerNode"]
        db.change(conn, db.pools, {"key": row["key"]}, columns, bump_etag=True)
        return db.reread(conn, db.pools, key=row["key"])

    async with scheduler.lock:
        row = await control.database.write(write)
        if row["key"] in scheduler.pools:
            scheduler.pools[row["key"]] = row
    return row
