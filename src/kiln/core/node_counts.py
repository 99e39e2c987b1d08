"""listPoolNodeCounts: how many of a pool's nodes are in each state, dedicated and low-priority apart."""

from __future__ import annotations

from collections.abc import Iterable

#: The counters of BatchNodeCounts, keyed by the node state each counts (wire spelling of the counter).
COUNTERS = {
    "creating": "creating",
    "starting": "starting",
    "waitingforstarttask": "waitingForStartTask",
    "starttaskfailed": "startTaskFailed",
    "idle": "idle",
    "running": "running",
    "rebooting": "rebooting",
    "reimaging": "reimaging",
    "leavingpool": "leavingPool",
    "offline": "offline",
    "preempted": "preempted",
    "unusable": "unusable",
    "unknown": "unknown",
    "deallocated": "deallocated",
    "deallocating": "deallocating",
    "upgradingos": "upgradingOS",
}


def empty_counts() -> dict[str, int]:
    return {**{counter: 0 for counter in COUNTERS.values()}, "total": 0}


def pool_node_counts(pool_id: str, nodes: Iterable[tuple[str, bool]]) -> dict[str, object]:
    """nodes: (shown state, isDedicated) of each node of the pool."""
    dedicated, low_priority = empty_counts(), empty_counts()
    for state, is_dedicated in nodes:
        counts = dedicated if is_dedicated else low_priority
        counts[COUNTERS[state]] += 1
        counts["total"] += 1
    return {"poolId": pool_id, "dedicated": dedicated, "lowPriority": low_priority}
