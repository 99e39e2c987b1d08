"""Random spot preemption's draws: the rate's chance per tick, and which nodes a draw may take."""

from __future__ import annotations

import pytest

from kiln.scheduler import spot
from kiln.scheduler.slots import NodeSlots


def _nodes(*specs: tuple[str, bool]) -> dict[str, NodeSlots]:
    nodes = {node_id: NodeSlots(node_id, "p", 1, f"/nodes/{node_id}") for node_id, _ in specs}
    for node_id, up in specs:
        nodes[node_id].up = up
    return nodes


@pytest.mark.parametrize(
    ("rate", "seconds", "expected"),
    [(0, 1, 0.0), (3600, 1, 0.632), (1, 3600, 0.632), (1800, 1, 0.393), (-5, 1, 0.0)],
)
def test_the_chance_of_a_preemption_follows_the_hourly_rate(rate: float, seconds: float, expected: float) -> None:
    assert spot.chance(rate, seconds) == pytest.approx(expected, abs=1e-3)


def test_a_draw_takes_only_low_priority_nodes_that_are_up() -> None:
    nodes = _nodes(("a_p", True), ("b_d", True), ("c_p", False), ("d_p", True))
    certain = spot.RandomPreemption(10**9)
    assert certain.victims(nodes) == ["a_p", "d_p"]
    assert spot.RandomPreemption(0).victims(nodes) == []


def test_a_seed_repeats_the_draws() -> None:
    nodes = _nodes(*((f"n{i}_p", True) for i in range(20)))
    draws = [spot.RandomPreemption(1800, seed=7) for _ in range(2)]
    runs = [[draw.victims(nodes) for _ in range(3)] for draw in draws]
    assert runs[0] == runs[1]
    assert all(0 < len(victims) < 20 for victims in runs[0])
