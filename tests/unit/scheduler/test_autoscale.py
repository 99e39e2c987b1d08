"""scheduler.autoscale: how one sample of a pool's node metrics is made from its nodes' measurements."""

from __future__ import annotations

from datetime import timedelta

from kiln.autoscale.samples import NODE_METRICS
from kiln.scheduler.autoscale import _node_metrics


def test_use_is_averaged_over_nodes_and_io_and_network_summed() -> None:
    nodes = [
        {"$CPUPercent": 50.0, "$MemoryBytes": 100.0, "$DiskBytes": 10.0, "$DiskReadBytes": 7.0, "$DiskWriteOps": 1.0},
        {"$CPUPercent": 10.0, "$MemoryBytes": 300.0, "$DiskBytes": 30.0, "$DiskReadBytes": 3.0, "$DiskWriteOps": 2.0},
    ]
    nodes[0]["$NetworkInBytes"], nodes[1]["$NetworkInBytes"] = 5.0, 6.0  # each node's share of its host's
    sample = _node_metrics(nodes, timedelta(seconds=30))
    assert set(sample) == {*NODE_METRICS, "$PreemptedNodeCount"}
    assert (sample["$CPUPercent"], sample["$MemoryBytes"], sample["$DiskBytes"]) == (30.0, 200.0, 20.0)
    assert (sample["$DiskReadBytes"], sample["$DiskWriteOps"], sample["$NetworkInBytes"]) == (10.0, 3.0, 11.0)
    assert (sample["$WallClockSeconds"], sample["$SampleNodeCount"]) == (60.0, 2.0)


def test_a_pool_without_nodes_samples_zeros() -> None:
    sample = _node_metrics([], timedelta(seconds=30))
    assert all(value == 0 for value in sample.values())


def test_preempted_nodes_count_though_they_are_not_measured() -> None:
    sample = _node_metrics([], timedelta(seconds=30), preempted=2)
    assert (sample["$PreemptedNodeCount"], sample["$SampleNodeCount"]) == (2.0, 0.0)
