"""listPoolNodeCounts as data."""

from __future__ import annotations

from kiln.core.node_counts import COUNTERS, pool_node_counts


def test_each_node_counts_once_under_its_state_dedicated_or_not():
    counts = pool_node_counts("p", [("idle", True), ("running", True), ("idle", True), ("preempted", False)])
    assert counts["poolId"] == "p"
    assert {k: v for k, v in counts["dedicated"].items() if v} == {"idle": 2, "running": 1, "total": 3}
    assert {k: v for k, v in counts["lowPriority"].items() if v} == {"preempted": 1, "total": 1}


def test_every_counter_of_the_wire_is_there_for_an_empty_pool():
    counts = pool_node_counts("p", [])
    assert set(counts["dedicated"]) == {*COUNTERS.values(), "total"}
    assert set(counts["dedicated"].values()) == {0}
    assert {"waitingForStartTask", "startTaskFailed", "leavingPool", "upgradingOS"} <= set(counts["lowPriority"])
