"""Timed work (job wall clock, directory retention): one loop over a heap of due times, woken on change."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from kiln import story
from kiln.undo import TrackedDict
from kiln.wire.times import now

log = logging.getLogger("kiln.timers")
Action = Callable[[], Awaitable[None]]


class Timers:
    """Runs each action once at (or soon after) its due time; a key scheduled again replaces the earlier one."""

    def __init__(self) -> None:
        self._heap: list[tuple[datetime, int, str]] = []
        #: tracked: a timer set or cancelled by a store transaction that fails is as it was (kiln.undo)
        self._actions: dict[str, tuple[int, Action]] = TrackedDict()
        self._counter = itertools.count()
        self._changed = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="kiln-timers")

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def schedule(self, key: str, due: datetime, action: Action) -> None:
        ticket = next(self._counter)
        self._actions[key] = (ticket, action)
        if not self._heap or due < self._heap[0][0]:  # the loop sleeps until the earliest: wake it only for a new one
            self._changed.set()
        heapq.heappush(self._heap, (due, ticket, key))

    def cancel(self, key: str) -> None:
        self._actions.pop(key, None)

    def __len__(self) -> int:
        return len(self._actions)

    async def _run(self) -> None:
        while True:
            self._changed.clear()
            delay = (self._heap[0][0] - now()).total_seconds() if self._heap else None
            if delay is None or delay > 0:
                try:
                    await asyncio.wait_for(self._changed.wait(), timeout=delay)
                except TimeoutError:
                    pass
                continue
            _, ticket, key = heapq.heappop(self._heap)
            current = self._actions.get(key)
            if current is None or current[0] != ticket:
                continue  # cancelled or replaced
            del self._actions[key]
            try:
                with story.caused_by(f"timer {key}"):
                    await current[1]()
            except Exception:  # one failed action must not stop the others
                log.exception("timer %s failed", key)
