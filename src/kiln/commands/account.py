"""Account-wide reads: the pools' node counts and usage metrics."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from kiln.commands.control import Control
from kiln.core import usage
from kiln.core.node import NodeState, busy_state
from kiln.core.node_counts import pool_node_counts
from kiln.store import rows as db
from kiln.wire.times import now


def _shown_state(node: dict[str, Any], running: dict[str, tuple[int, int]]) -> str:
    """As GET node shows it: idle and running differ by the job tasks on the node."""
    if node["state"] in (NodeState.IDLE, NodeState.RUNNING):
        return busy_state(running.get(node["id"], (0, 0))[0]).value
    return str(node["state"])


async def node_counts(control: Control) -> list[dict[str, Any]]:
    """One entry per pool, in pool id order."""

    def read(conn: Connection) -> list[dict[str, Any]]:
        running = db.running_tasks_by_node(conn)
        by_pool: dict[str, list[tuple[str, bool]]] = {}
        for node in db.find(conn, db.nodes):
            by_pool.setdefault(node["pool_key"], []).append(
                (_shown_state(node, running), bool(node.get("is_dedicated", True)))
            )
        return [
            pool_node_counts(pool["id"], by_pool.get(pool["key"], ()))
            for pool in db.find(conn, db.pools, order_by=["key"])
        ]

    return await control.database.read(read)


async def usage_metrics(control: Control, start: datetime | None, end: datetime | None) -> list[dict[str, Any]]:
    """Core hours per pool per interval, from the lifetimes of the nodes that were in it."""
    moment = now()
    first, last = usage.window(start, end, moment)
    lifetimes = await control.database.read(lambda conn: db.node_lifetimes_since(conn, first))
    return usage.usage_metrics(lifetimes, first, last, moment)
