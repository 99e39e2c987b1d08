"""A removed node's time in its pool outlives it (listPoolUsageMetrics counts it)."""

from __future__ import annotations

from datetime import timedelta

from kiln.store import rows
from kiln.store.database import Database

from .test_store import T0, node_row, pool_row, tx


def test_a_removed_node_leaves_its_lifetime_and_a_current_node_counts_as_open(db: Database) -> None:
    with tx(db) as conn:
        rows.insert_rows(conn, rows.pools, [pool_row(spec={"vmSize": "standard_d4s_v3"})])
        rows.insert_rows(
            conn, rows.nodes, [node_row("gone"), node_row("here", allocation_time=T0 + timedelta(hours=1))]
        )
    with tx(db) as conn:
        rows.remove_node(conn, "gone")
    with tx(db) as conn:
        found = sorted(rows.node_lifetimes_since(conn, T0), key=lambda lifetime: lifetime[2])
    (pool_id, size, start, end), current = found
    assert (pool_id, size, start) == ("p", "standard_d4s_v3", T0) and end is not None and end > T0
    assert current == ("p", "standard_d4s_v3", T0 + timedelta(hours=1), None)
    with tx(db) as conn:
        assert [lifetime[3] for lifetime in rows.node_lifetimes_since(conn, end + timedelta(seconds=1))] == [None]
