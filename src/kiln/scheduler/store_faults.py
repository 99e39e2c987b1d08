"""After the store failed a write (a full disk, an I/O error), the scheduler's memory may be ahead of it: a
transaction's decisions are made in memory before its commit, and a failed commit does not undo them. Until
the store takes writes again the scheduler places nothing and drops the nodes' reports; then it rebuilds its
memory from the store as a start does: what was running is requeued, counted, and the nodes are restarted (their
commands killed: a run the store may not know of must not go on beside its rerun)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from kiln import story

if TYPE_CHECKING:
    from kiln.scheduler.engine import Scheduler

log = logging.getLogger("kiln.scheduler")

#: Seconds between tries of a failed store.
RETRY_INTERVAL = 0.5


class StoreFaults:
    """The scheduler's answer to a failed store write: stand still, then rebuild once the store writes again."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        #: memory may be ahead of the store: no placement, no reports, until rebuilt
        self.faulted = False

    def fault(self, exc: Exception) -> None:
        if self.faulted:
            return
        self.faulted = True
        log.error("the store failed a write; the scheduler stands still until it takes writes again")
        self.scheduler._spawn(self._rebuild_when_writable(), "store-fault")

    async def _rebuild_when_writable(self) -> None:
        while True:
            await asyncio.sleep(RETRY_INTERVAL)
            try:
                await self.scheduler.db.probe()
                await self._rebuild()
            except Exception as exc:  # still failing: the next try
                log.info("the store still fails: %s", exc)
                continue
            break
        self.faulted = False
        log.warning("the store takes writes again: the scheduler's memory was rebuilt from it")
        self.scheduler.wake()

    async def _rebuild(self) -> None:
        """Memory from the store (what was running requeued), then every node restarted: until they are, the
        scheduler stays faulted, so no requeued task is placed while its old command may still run."""
        s = self.scheduler
        async with s.lock:
            s.nodes.clear()
            s.pools.clear()
            s.jobs.clear()
            s.preps.clear()
            s.waiting.clear()
            s.steps.clear()
            s._results_inbox.clear()
            s._init_multi_instance()
            with story.caused_by("recovery after a store failure"):
                await s.db.write(s._recover)
            for node_id in list(s.nodes):
                await s.backend.restart_node(node_id)
        for entry in s.jobs.values():
            s._arm_wall_clock(entry.row)
