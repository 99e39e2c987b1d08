"""Node operations beyond reboot and reimage: task scheduling, removing nodes, stopping a resize."""

from __future__ import annotations

from kiln.commands import autoscale, nodes, pools
from kiln.commands.control import Check, Control, Row


async def set_scheduling(control: Control, pool_id: str, node_id: str, enabled: bool, option: str) -> None:
    """Enable or disable task scheduling on the node; `option` says what becomes of its tasks on disable."""
    await control.scheduler.set_node_scheduling((await node(control, pool_id, node_id))["id"], enabled, option)


async def remove_nodes(control: Control, pool_id: str, node_ids: list[str], option: str, check: Check) -> None:
    row, _ = await pools.get(control, pool_id)
    check(row)
    autoscale.check_not_autoscaled(row)  # its formula decides its size
    await control.scheduler.remove_nodes(row["key"], node_ids, option)


async def stop_resize(control: Control, pool_id: str, check: Check) -> None:
    row, _ = await pools.get(control, pool_id)
    check(row)
    await control.scheduler.stop_resize(row["key"])


async def preempt(control: Control, pool_id: str, node_id: str) -> tuple[Row, Row]:
    """Kiln-specific: preempt a low-priority node now. The pool, and the node as it is after."""
    await control.scheduler.preempt_node((await node(control, pool_id, node_id))["id"])
    return await control.database.read(lambda conn: nodes.load(conn, pool_id, node_id))


async def node(control: Control, pool_id: str, node_id: str) -> Row:
    """The node (404 for an unknown pool or node)."""
    return (await control.database.read(lambda conn: nodes.load(conn, pool_id, node_id)))[1]


async def deallocate(control: Control, pool_id: str, node_id: str, option: str) -> None:
    await control.scheduler.deallocate_node((await node(control, pool_id, node_id))["id"], option)


async def start(control: Control, pool_id: str, node_id: str) -> None:
    await control.scheduler.start_node((await node(control, pool_id, node_id))["id"])
