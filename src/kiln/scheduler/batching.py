"""Group commit: events that arrive while one batch is being applied are applied together in the next.

A pool of 1,000 nodes reports 1,000 arrivals within seconds; one store transaction each (and a look at the
whole pool each, to see whether its resize is done) held the scheduler's lock for a minute. Gathered, they
cost one transaction per batch: the batch grows by itself with the load, since arrivals gather while the
previous batch holds the lock, and a lone event waits for nothing but one pass of the event loop. While
events keep coming, the next batch lingers LINGER s to gather more: a pool's arrivals are a stream, and each
batch costs a transaction and a look at the pool whatever its size.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

log = logging.getLogger("kiln.scheduler")

T = TypeVar("T")

#: How long a batch that follows another gathers events before it is applied.
LINGER = 0.02


class GroupCommit(Generic[T]):
    """`submit(item)` returns once `apply` has taken the item, in a batch with whatever else arrived meanwhile.

    Items are applied in the order they were submitted. A batch that fails is applied again one item at a
    time, so one item's fault (a stale row) fails only its own submitter; `apply` must leave nothing behind
    when it fails (a store transaction and kiln.undo do that).
    """

    def __init__(self, apply: Callable[[list[T]], Awaitable[None]], name: str, linger: float = LINGER) -> None:
        self._apply = apply
        self._name = name
        self._linger = linger
        self._pending: list[tuple[T, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> None:
        done = asyncio.get_running_loop().create_future()
        self._pending.append((item, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name=f"kiln-{self._name}")
        await done

    async def _flush(self) -> None:
        batch: list[tuple[T, asyncio.Future[None]]] = []
        try:
            while self._pending:
                # the events of this pass of the loop join the first batch; of a while, those of a stream
                await asyncio.sleep(self._linger if batch else 0)
                batch, self._pending = self._pending, []
                if not await self._try(batch) and len(batch) > 1:
                    log.warning("%s: a batch of %d failed; applying it one at a time", self._name, len(batch))
                    for entry in batch:
                        await self._try([entry])
        finally:  # cancelled (shutdown): nobody waits for ever
            for _, done in batch + self._pending:
                done.cancel()

    async def _try(self, batch: list[tuple[T, asyncio.Future[None]]]) -> bool:
        """Apply the batch; its submitters learn the outcome (a lone item's submitter gets its error)."""
        try:
            await self._apply([item for item, _ in batch])
        except Exception as exc:
            if len(batch) == 1 and not batch[0][1].done():
                batch[0][1].set_exception(exc)
            return False
        for _, done in batch:
            if not done.done():
                done.set_result(None)
        return True
