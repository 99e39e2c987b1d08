"""Spot capacity taken back at random: `kiln serve --spot-preemption-rate PER_HOUR` preempts each low-priority
node that is up at that average rate (a Poisson process, drawn once a TICK), through the same path as the
on-demand `kiln node preempt`. So a Batch client's spot handling meets preemptions it did not ask for."""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Mapping
from typing import TYPE_CHECKING

from kiln import story
from kiln.core.node import is_dedicated
from kiln.errors import KilnError
from kiln.scheduler.slots import NodeSlots

if TYPE_CHECKING:
    from kiln.scheduler.engine import Scheduler

log = logging.getLogger("kiln.scheduler")

#: Seconds between draws.
TICK = 1.0
#: The cause of a random preemption in the stories of the tasks it requeues.
STIMULUS = "timer spot-preemption"


def chance(rate_per_hour: float, seconds: float) -> float:
    """The probability that a node is preempted within `seconds`, when it is `rate_per_hour` times an hour
    on average."""
    return 1 - math.exp(-max(0.0, rate_per_hour) * seconds / 3600)


class RandomPreemption:
    """One draw per up low-priority node and TICK; `seed` makes the draws repeatable (for tests)."""

    def __init__(self, rate_per_hour: float, seed: int | None = None) -> None:
        self.probability = chance(rate_per_hour, TICK)
        self.random = random.Random(seed)

    def victims(self, nodes: Mapping[str, NodeSlots]) -> list[str]:
        """The nodes this draw preempts, in id order (so a seed gives the same draws for the same nodes)."""
        candidates = sorted(n.node_id for n in nodes.values() if n.up and not is_dedicated(n.node_id))
        return [node_id for node_id in candidates if self.random.random() < self.probability]

    async def run(self, scheduler: Scheduler) -> None:
        while True:
            await asyncio.sleep(TICK)
            for node_id in self.victims(scheduler.nodes):
                try:
                    with story.caused_by(STIMULUS):
                        await scheduler.preempt_node(node_id)
                except KilnError as error:  # it left, or went down, since the draw: nothing to take back
                    log.info("random preemption of %s skipped: %s", node_id, error)
                else:
                    log.info("node %s preempted at random", node_id)
