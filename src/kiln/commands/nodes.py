"""Compute nodes: read, list, reboot, reimage."""

from __future__ import annotations

from sqlalchemy import Connection

from kiln.commands import pools
from kiln.commands.control import Control, Matches, Row
from kiln.core import filters
from kiln.errors import NotFound
from kiln.store import lists, seek
from kiln.store import rows as db

#: (runningTasksCount, runningTaskSlotsCount) of a node
Running = tuple[int, int]
#: How many tasks a node's recentTasks lists.
RECENT_TASKS = 10


def load(conn: Connection, pool_id: str, node_id: str) -> tuple[Row, Row]:
    """The pool and its node."""
    pool = pools.load(conn, pool_id)
    node = db.get(conn, db.nodes, id=node_id)
    if node is None or node["pool_key"] != pool["key"]:
        raise NotFound("The specified compute node does not exist.", code="NodeNotFound")
    return pool, node


async def list_all(control: Control, pool_id: str) -> tuple[Row, list[tuple[Row, Running, list[Row]]]]:
    """The pool, and each of its nodes with the job tasks running there and its recent tasks."""

    def read(conn: Connection) -> tuple[Row, list[tuple[Row, Running, list[Row]]]]:
        pool = pools.load(conn, pool_id)
        nodes = db.find(conn, db.nodes, order_by=["allocation_time", "id"], pool_key=pool["key"])
        running = db.running_tasks_by_node(conn)
        recent = db.recent_tasks_by_node(conn, [node["id"] for node in nodes], RECENT_TASKS)
        return pool, [(node, running.get(node["id"], (0, 0)), recent.get(node["id"], [])) for node in nodes]

    return await control.database.read(read)


async def list_page(
    control: Control, pool_id: str, term: filters.Term | None, matches: Matches, after: str, count: int
) -> seek.Page:
    """A page of the pool's nodes in the order of their ids after `after`, each as (pool, node, the job tasks
    running there, its recent tasks); matches: the whole filter on one of those (recent tasks left out)."""

    def read(conn: Connection) -> seek.Page:
        pool = pools.load(conn, pool_id)

        def running(node: Row) -> Running:
            return db.running_tasks_by_node(conn, [node["id"]]).get(node["id"], (0, 0))

        keep = lambda node: matches((pool, node, running(node), []))  # noqa: E731
        page = lists.node_page(conn, pool["key"], term, after, count, keep)
        ids = [node["id"] for node in page.rows]  # one look at the page's running and recent tasks, not one per node
        counts, recent = db.running_tasks_by_node(conn, ids), db.recent_tasks_by_node(conn, ids, RECENT_TASKS)
        found = [(pool, node, counts.get(node["id"], (0, 0)), recent.get(node["id"], [])) for node in page.rows]
        return seek.Page(found, page.after)

    return await control.database.read(read)


async def get(control: Control, pool_id: str, node_id: str) -> tuple[Row, Row, Running, list[Row]]:
    """The pool, the node, the job tasks running there and its recent tasks."""

    def read(conn: Connection) -> tuple[Row, Row, Running, list[Row]]:
        pool, node = load(conn, pool_id, node_id)
        running = db.running_tasks_by_node(conn, [node["id"]]).get(node["id"], (0, 0))
        return pool, node, running, db.recent_tasks(conn, node["id"], RECENT_TASKS)

    return await control.database.read(read)


async def restart(control: Control, pool_id: str, node_id: str, option: str, *, reimage: bool) -> None:
    """Reboot or reimage the node; `option` says what becomes of its tasks (nodeRebootOption)."""
    _, node = await control.database.read(lambda conn: load(conn, pool_id, node_id))
    await control.scheduler.restart_node(node["id"], option, reimage=reimage)
