"""Which queued tasks go first and how many may start (batch-semantics §6.5), as pure functions over memory.

- Jobs of one pool are served by `priority` (higher first). Among equal priorities the pool's
  `taskSchedulingPolicy.jobDefaultOrder` decides: `creationtime` serves the older job first, `none` (the
  default) takes one task from each job in turn.
- A job with `maxParallelTasks` N never has more than N tasks on nodes (running or preparing).
- The job manager task is the job's first task: while it waits for a node, the job's other tasks wait too.
  With `runExclusive` it needs an empty node and keeps the whole node to itself while it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from kiln.scheduler.line import TICKETS, Current, JobLine, Key, line_key
from kiln.scheduler.slots import JobQueue, NodeSlots, choose_node

J = TypeVar("J", bound=Hashable)

#: (task seq, slots, nodes with a free slot, may the task use this node) -> the node it starts on, or None
Chooser = Callable[[int, int, list[NodeSlots], Callable[[NodeSlots], bool]], NodeSlots | None]

#: How many tasks of one job a placement round passes over (they fit no node now) before it stops looking.
MAX_SKIPPED = 64


@dataclass(frozen=True, slots=True)
class ManagerRule:
    """The job manager task of a job, while it matters for placement."""

    seq: int  #: its task seq (the job's first task)
    exclusive: bool  #: runExclusive


def parallel_budget(max_parallel: int, on_nodes: int) -> int | None:
    """How many more tasks of the job may start now; None = no limit (maxParallelTasks -1)."""
    if max_parallel == -1:
        return None
    return max(0, max_parallel - on_nodes)


def job_order(pool_spec: dict[str, Any]) -> str:
    """The pool's taskSchedulingPolicy.jobDefaultOrder, lower case: `none` (turns) or `creationtime`."""
    return str((pool_spec.get("taskSchedulingPolicy") or {}).get("jobDefaultOrder") or "none").lower()


def _fits_exclusively(node: NodeSlots) -> bool:
    return node.used == 0


def place_job(
    queue: JobQueue,
    nodes: list[NodeSlots],
    fill: str,
    allowed: Callable[[NodeSlots], bool],
    *,
    budget: int | None = None,
    manager: ManagerRule | None = None,
    waiting: Callable[[int], bool] | None = None,
    choose: Chooser | None = None,
) -> list[tuple[int, int, NodeSlots]]:
    """Take tasks off one job's queue and book them on nodes: [(seq, slots, node)].

    Tasks that fit no node now go back on the queue; smaller ones behind them may still fit. The job manager
    is never passed over: if it cannot start, nothing of its job starts in this round.
    """
    placed: list[tuple[int, int, NodeSlots]] = []
    skipped: list[tuple[int, int]] = []
    while len(queue) and len(skipped) < MAX_SKIPPED and (budget is None or len(placed) < budget):
        seq, slots = queue.pop()
        if waiting is not None and waiting(seq):
            continue  # a dependency went missing after it was queued: queued again once released
        is_manager = manager is not None and seq == manager.seq
        exclusive = manager is not None and is_manager and manager.exclusive
        may_use = (lambda n: allowed(n) and _fits_exclusively(n)) if exclusive else allowed
        free = [n for n in nodes if n.free > 0]
        if not free:  # every node is full: nothing else fits this round
            queue.push(seq, slots)
            break
        node = choose(seq, slots, free, may_use) if choose is not None else choose_node(free, slots, fill, may_use)
        if node is None:
            skipped.append((seq, slots))
            if is_manager:
                break
            continue
        node.book(seq, slots)  # tentative: the caller checks the task's row, then rebooks or releases
        node.exclusive = node.exclusive or exclusive
        placed.append((seq, slots, node))
    for seq, slots in skipped:
        queue.push(seq, slots)
    return placed


@dataclass(slots=True)
class JobTurn:
    """One job's part in a placement round."""

    job: Any  #: the caller's job object, handed back with each booking
    queue: JobQueue
    priority: int
    created: int  #: creation order
    budget: int | None = None  #: more tasks it may start now (maxParallelTasks); None = no limit
    manager: ManagerRule | None = None
    allowed: Callable[[NodeSlots], bool] = lambda node: True
    served: int = 0  #: ticket of the last task it was given (jobDefaultOrder none: least recently served first)
    waiting: Callable[[int], bool] | None = None  #: tasks that wait for dependencies (dropped when popped)
    choose: Chooser | None = None  #: the job's own node choice (multi-instance tasks take several nodes)


def plan(
    line: JobLine[J],
    current: Current[J],
    turn_of: Callable[[J], JobTurn],
    nodes: list[NodeSlots],
    fill: str,
    order: str = "none",
    tickets: Iterator[int] = TICKETS,
) -> list[tuple[JobTurn, int, int, NodeSlots]]:
    """Book the queued tasks of the jobs in one pool's line on its nodes: [(turn, seq, slots, node)].

    Jobs are served in line order, only as many as the free slots take (`turn_of` makes each one's turn when
    it is reached). Under jobDefaultOrder none a job gets one task per visit and goes back behind its equals,
    `served` stamped with the next of `tickets`, so that the turns carry over from one round to the next. A job
    that can place nothing more now (nothing fits, its maxParallelTasks reached) waits for the next round.
    """
    visited: dict[J, JobTurn] = {}

    def key_now(job: J) -> Key | None:
        key, turn = current(job), visited.get(job)
        return key if key is None or turn is None else line_key(turn.priority, turn.created, turn.served, order)

    booked: list[tuple[JobTurn, int, int, NodeSlots]] = []
    resting: set[J] = set()
    try:
        while any(n.free > 0 for n in nodes) and (head := line.pop(key_now)) is not None:
            job = head[1]
            if job in resting:  # listed again by its queue refilling (what it passed over went back)
                continue
            turn = visited.get(job) or visited.setdefault(job, turn_of(job))
            placed = _take(turn, nodes, fill, 1 if order == "none" else None, tickets)
            booked += placed
            if placed and turn.budget != 0 and (key := key_now(job)) is not None:
                line.want(job, key)
            else:
                resting.add(job)
    finally:  # whatever happens, a job taken out of the line is back in it if it still wants slots
        for job in resting:
            if (key := key_now(job)) is not None:
                line.want(job, key)
    return booked


def _take(
    turn: JobTurn, nodes: list[NodeSlots], fill: str, at_most: int | None, tickets: Iterator[int]
) -> list[tuple[JobTurn, int, int, NodeSlots]]:
    if turn.budget is not None:
        at_most = turn.budget if at_most is None else min(at_most, turn.budget)
    if not any(n.free > 0 for n in nodes):
        return []
    placed = place_job(
        turn.queue,
        nodes,
        fill,
        turn.allowed,
        budget=at_most,
        manager=turn.manager,
        waiting=turn.waiting,
        choose=turn.choose,
    )
    if placed:
        turn.served = next(tickets)
    if turn.budget is not None:
        turn.budget -= len(placed)
    return [(turn, seq, slots, node) for seq, slots, node in placed]
