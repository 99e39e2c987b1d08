"""Pure per-node bookkeeping for placement: free slots, and the spread/pack choice."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

#: How many times its taskSlotsPerNode in tasks a full node may hold sent ahead (scheduler/ahead.py). One
#: round's worth runs dry while the report that would refill it is on its way: 2 ran ~12% faster than 1
#: in bench/throughput.py, with less server CPU per task (each report then carries more).
AHEAD_DEPTH = 2


@dataclass(slots=True)
class NodeSlots:
    """What the scheduler knows of a node between store reads."""

    node_id: str
    pool_key: str
    capacity: int
    root: str
    incarnation: int = 0
    up: bool = False  #: the worker answers and the node is idle/running
    held: int = 0  #: slots held by tasks on the node (read and write it as `used`)
    draining: bool = False  #: finishing its tasks before a reboot or reimage: takes no new ones
    #: a runExclusive job manager runs here: nothing else may start. It ran alone, so the node
    #: empties exactly when it leaves; that is when the flag clears (see `used`).
    exclusive: bool = False
    #: task steps sent ahead to the node, not yet known to have started: step_id -> (job_key, task seq, slots)
    ahead: dict[str, tuple[str, int, int]] = field(default_factory=dict)

    @property
    def used(self) -> int:
        return self.held

    @used.setter
    def used(self, value: int) -> None:
        self.held = value
        if value <= 0:
            self.exclusive = False

    @property
    def free(self) -> int:
        return self.capacity - self.used if self.up and not self.draining and not self.exclusive else 0

    @property
    def room_ahead(self) -> int:
        """Slots' worth of tasks that may still be sent ahead, while the node takes new tasks."""
        if not self.up or self.draining or self.exclusive:
            return 0
        return AHEAD_DEPTH * self.capacity - sum(slots for _, _, slots in self.ahead.values())

    @property
    def ahead_stranded(self) -> bool:
        """The first task sent ahead fits the slots the control plane sees free: the node will not start it.
        A node starts tasks sent ahead (in order) only in slots its own steps free before it reports them;
        slots it has reported are the control plane's to give, so a task needing more slots than one report
        frees (a 4-slot task among 1-slot ones) would wait for ever on an idle node. Take it back and place it."""
        if not self.ahead:
            return False
        _, _, slots = next(iter(self.ahead.values()))
        return slots <= self.free


def choose_node(
    nodes: Iterable[NodeSlots], slots: int, fill: str, allowed: Callable[[NodeSlots], bool]
) -> NodeSlots | None:
    """spread: the node with most free slots; pack: the fullest node that still fits."""
    fitting = [n for n in nodes if n.free >= slots and allowed(n)]
    if not fitting:
        return None
    if fill == "pack":
        return min(fitting, key=lambda n: (n.free, n.node_id))
    return min(fitting, key=lambda n: (-n.free, n.node_id))


@dataclass(slots=True)
class JobQueue:
    """Active tasks of one job waiting for a slot, oldest first. Entries are (task seq, required slots)."""

    heap: list[tuple[int, int]] = field(default_factory=list)
    queued: set[int] = field(default_factory=set)

    def push(self, seq: int, slots: int) -> None:
        if seq not in self.queued:
            self.queued.add(seq)
            heapq.heappush(self.heap, (seq, slots))

    def peek(self) -> tuple[int, int] | None:
        return self.heap[0] if self.heap else None

    def pop(self) -> tuple[int, int]:
        seq, slots = heapq.heappop(self.heap)
        self.queued.discard(seq)
        return seq, slots

    def remove(self, seq: int) -> None:
        """Take a task off the queue wherever it is; the rest keeps its heap order (pops stay oldest first)."""
        if seq in self.queued:
            self.queued.discard(seq)
            self.heap = [entry for entry in self.heap if entry[0] != seq]
            heapq.heapify(self.heap)

    def clear(self) -> None:
        self.heap.clear()
        self.queued.clear()

    def __len__(self) -> int:
        return len(self.heap)
