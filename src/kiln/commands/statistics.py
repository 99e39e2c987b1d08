"""Statistics reads: what tasks used (store.statistics) and, for pools, the node time they had."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection

from kiln.commands.control import Control
from kiln.core.statistics import node_seconds
from kiln.store import rows as db
from kiln.store import statistics
from kiln.wire.times import now

Row = dict[str, Any]
#: rows read per statement (SQLite's limit on bound values is far above it)
CHUNK = 500


async def of_tasks(control: Control, seqs: Sequence[int]) -> dict[int, Row]:
    """By seq, the tasks of these that have run."""

    def read(conn: Connection) -> dict[int, Row]:
        found: dict[int, Row] = {}
        for start in range(0, len(seqs), CHUNK):
            found.update(statistics.tasks(conn, seqs[start : start + CHUNK]))
        return found

    return await control.database.read(read)


async def of_owners(control: Control, scope: str, keys: Sequence[str]) -> dict[str, Row]:
    """By key, the jobs' or schedules' rows (only those with a task that has run)."""

    def read(conn: Connection) -> dict[str, Row]:
        found: dict[str, Row] = {}
        for start in range(0, len(keys), CHUNK):
            found.update(statistics.owners(conn, scope, keys[start : start + CHUNK]))
        return found

    return await control.database.read(read)


async def of_pools(control: Control, pools: Sequence[Row]) -> dict[str, tuple[Row | None, tuple[float, float]]]:
    """By pool key: its row (None until a task has run on it) and its nodes' (seconds, core seconds) since the
    pool was created, those that have left it included."""
    if not pools:
        return {}
    since = min(pool["creation_time"] for pool in pools)

    def read(conn: Connection) -> tuple[dict[str, Row], list[tuple[str, str, Any, Any]]]:
        return statistics.owners(conn, "pool", [p["key"] for p in pools]), db.node_lifetimes_since(conn, since)

    rows, lifetimes = await control.database.read(read)
    moment = now()
    return {
        pool["key"]: (rows.get(pool["key"]), node_seconds(lifetimes, pool["id"], pool["creation_time"], moment))
        for pool in pools
    }


async def lifetime(control: Control) -> tuple[Row | None, tuple[float, float]]:
    """The account's row and every pool's node time since the account's first statistics."""

    def read(conn: Connection) -> tuple[Row | None, tuple[float, float]]:
        row = statistics.owner(conn, *statistics.ACCOUNT)
        if row is None:
            return None, (0.0, 0.0)
        lifetimes = db.node_lifetimes_since(conn, row["start_time"])
        return row, node_seconds(lifetimes, None, row["start_time"], now())

    return await control.database.read(read)
