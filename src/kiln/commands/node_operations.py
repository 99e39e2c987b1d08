"""Node operations beyond reboot and reimage: task scheduling, removing nodes, stopping a resize."""

from __future__ import annotations

from kiln.commands import nodes, pools
from kiln.commands.control import Check, Control


async def set_scheduling(control: Control, pool_id: str, node_id: str, enabled: bool, option: str) -> None:
    """Enable or disable task scheduling on the node; `option` says what becomes of its tasks on disable."""
    _, node = await control.database.read(lambda conn: nodes.load(conn, pool_id, node_id))
    await control.scheduler.set_node_scheduling(node["id"], enabled, option)


async def remove_nodes(control: Control, pool_id: str, node_ids: list[str], option: str, check: Check) -> None:
    row, _ = await pools.get(control, pool_id)
    check(row)
    await control.scheduler.remove_nodes(row["key"], node_ids, option)


async def stop_resize(control: Control, pool_id: str, check: Check) -> None:
    row, _ = await pools.get(control, pool_id)
    check(row)
    await control.scheduler.stop_resize(row["key"])
