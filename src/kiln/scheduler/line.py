"""One pool's jobs that want slots, in the order placement serves them, kept between placement rounds.

Why: with 1,000 open jobs, a round that gathered, sorted and turned over every one of them cost more than
the few tasks it placed. The line keeps the jobs with queued tasks in a heap by `line_key`; a round pops only
the jobs it serves, and a job served goes back behind its equals (jobDefaultOrder none: they take turns).

Kept right lazily: a job is listed when its queue fills (JobQueue.on_refill) or its row changes, and each
pop asks the caller for the job's key now (`Current`): a job that no longer wants slots (its queue ran dry,
it was disabled or ended) leaves the line there, and one whose key moved (its priority was updated, a
failed transaction undid its turn) is put back in its place. So no change to memory needs to tell the line,
except that a job starts wanting slots, and a transaction undone leaves nothing wrong behind.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable
from itertools import count
from typing import Generic, TypeVar

J = TypeVar("J", bound=Hashable)

#: (priority, creation under creationtime, turn, creation): lower goes first (`line_key`)
Key = tuple[int, int, int, int]
#: the job's key now, or None if it wants no slot of this pool now
Current = Callable[[J], Key | None]

#: Increasing turn tickets shared by all rounds and pools: a job served (placed, or sent ahead) gets the next.
TICKETS = count(1)


def line_key(priority: int, created: int, served: int, order: str) -> Key:
    """A job's place in its pool's line: higher priority first; among equal priorities under jobDefaultOrder
    `creationtime` the older job, else (`none`) the one served least recently (a job that starts wanting slots
    counts as served then: it joins the back, ControlState.tasks_added), then the older."""
    return (-priority, created if order == "creationtime" else 0, served, created)


def same_rank(a: Key, b: Key) -> bool:
    """Equal places but for turns: under `none`, jobs of one priority; under `creationtime`, one job."""
    return a[:2] == b[:2]


class JobLine(Generic[J]):
    """A heap of (key, job) with at most one live entry per job (`listed`); other entries are stale."""

    __slots__ = ("heap", "listed")

    def __init__(self) -> None:
        self.heap: list[tuple[Key, J]] = []
        self.listed: dict[J, Key] = {}  #: each listed job's key, that of its live entry

    def want(self, job: J, key: Key) -> None:
        """The job wants slots, at `key` (listed again if it moved)."""
        if self.listed.get(job) == key:
            return
        self.listed[job] = key
        heapq.heappush(self.heap, (key, job))
        if len(self.heap) > 2 * len(self.listed) + 64:  # stale entries outgrew the live ones
            self.heap = [(key, job) for job, key in self.listed.items()]
            heapq.heapify(self.heap)

    def peek(self, current: Current[J]) -> tuple[Key, J] | None:
        """The first job in line, as it is now; it stays listed."""
        while self.heap:
            key, job = self.heap[0]
            if self.listed.get(job) != key:  # stale
                heapq.heappop(self.heap)
                continue
            now = current(job)
            if now == key:
                return key, job
            heapq.heappop(self.heap)
            del self.listed[job]
            if now is not None:
                self.want(job, now)
        return None

    def pop(self, current: Current[J]) -> tuple[Key, J] | None:
        """The first job in line, taken out of it (the caller lists it again if it still wants slots)."""
        head = self.peek(current)
        if head is not None:
            heapq.heappop(self.heap)
            del self.listed[head[1]]
        return head

    def __len__(self) -> int:
        """Jobs listed (some may want no slot any more: they leave at the next pop that reaches them)."""
        return len(self.listed)

    def check(self) -> None:
        live = {(key, job) for job, key in self.listed.items()}
        assert live <= set(self.heap), f"listed jobs without their heap entry: {live - set(self.heap)}"
