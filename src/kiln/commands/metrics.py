"""What /metrics reads from the store when scraped: tasks and nodes by state."""

from __future__ import annotations

from sqlalchemy import Connection

from kiln import metrics
from kiln.commands.control import Control
from kiln.core.node import NodeState
from kiln.core.task import TaskState
from kiln.store import rows as db
from kiln.store.schema import nodes, tasks


async def scrape(control: Control) -> bytes:
    def read(conn: Connection) -> tuple[dict[str, int], dict[str, int]]:
        return db.count_by_state(conn, tasks), db.count_by_state(conn, nodes)

    task_counts, node_counts = await control.database.read(read)
    return metrics.scrape(
        {state.value: task_counts.get(state.value, 0) for state in TaskState},
        {state.value: node_counts.get(state.value, 0) for state in NodeState},
    )
