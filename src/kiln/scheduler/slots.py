"""Pure per-node bookkeeping for placement: free slots, and the spread/pack choice."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial

from kiln import undo
from kiln.undo import Tracked, TrackedDict, TrackedSet

#: How many times its taskSlotsPerNode in tasks a full node may hold sent ahead (scheduler/ahead.py). One
#: round's worth runs dry while the report that would refill it is on its way: 2 ran ~12% faster than 1
#: in bench/throughput.py, with less server CPU per task (each report then carries more).
AHEAD_DEPTH = 2
#: A node whose latest task ran under QUICK_TASK seconds may hold this many rounds instead: with rounds to
#: spare, the node holds its results up to AHEAD_LINGER (compute/node/agent.py) and each report, one store
#: transaction on the server, carries ~5x as many (server CPU per trivial task ~35% less). The price: a job
#: that comes, of the same priority, waits behind at most this many rounds (~2 s of tasks like the latest).
AHEAD_DEPTH_QUICK = 10
QUICK_TASK = 0.2


#: What holds slots of a node: the step id of a task's attempt (its process may not exist yet: a task waiting
#: for its preparation task, a multi-instance task's subtask), or a task's seq for the moment between a placement
#: round's choice and its check of the task's row (a tentative booking: `rebook` makes it a step's, `release` drops it).
Holder = str | int


@dataclass(slots=True)
class NodeSlots(Tracked):
    """What the scheduler knows of a node between store reads."""

    node_id: str
    pool_key: str
    capacity: int
    root: str
    incarnation: int = 0
    up: bool = False  #: the worker answers and the node is idle/running
    draining: bool = False  #: finishing its tasks before a reboot or reimage: takes no new ones
    preempted: bool = False  #: a spot node taken back, until its worker answers again (autoscale counts them)
    #: a runExclusive job manager runs here: nothing else may start. It ran alone, so the node
    #: empties exactly when it leaves; that is when the flag clears (see `release`).
    exclusive: bool = False
    quick: bool = False  #: its latest task ran under QUICK_TASK seconds: it may hold AHEAD_DEPTH_QUICK rounds ahead
    #: task steps sent ahead to the node, not yet known to have started: step_id -> (job_key, task seq, slots)
    ahead: dict[str, tuple[str, int, int]] = field(default_factory=TrackedDict)
    #: of those, the ones the node has been asked to give back (`ControlState.withdraw`), until it answers;
    #: and those it answered it had started, until their notice comes
    withdrawing: set[str] = field(default_factory=TrackedSet)
    #: the slots each holder has on the node: changed by book/rebook/release only, which keep `used` its sum
    booked: dict[Holder, int] = field(default_factory=TrackedDict)
    _used: int = field(default=0, init=False, repr=False)

    @property
    def used(self) -> int:
        return self._used

    def book(self, holder: Holder, slots: int) -> None:
        if holder in self.booked:
            raise ValueError(f"{holder!r} already holds slots on node {self.node_id}")
        self.booked[holder] = slots
        self._used += slots

    def rebook(self, tentative: int, holder: str) -> None:
        """A tentative booking becomes its step's."""
        if holder in self.booked:
            raise ValueError(f"{holder!r} already holds slots on node {self.node_id}")
        self.booked[holder] = self.booked.pop(tentative)

    def release(self, holder: Holder) -> int:
        """Free what the holder has here (nothing, if it has nothing: a lost node was emptied at once)."""
        slots = self.booked.pop(holder, 0)
        self._used -= slots
        if not self._used:
            self.exclusive = False
        return slots

    def release_all(self) -> None:
        """The node starts afresh (up again, lost, or restarting with its tasks requeued)."""
        self.booked.clear()
        self._used = 0
        self.exclusive = False

    def check(self) -> None:
        """The bookkeeping's invariants (unit tests call it, as StepTable.check() on the node)."""
        assert self._used == sum(self.booked.values()), (self._used, self.booked)
        assert 0 <= self._used <= self.capacity, (self._used, self.capacity)
        assert all(slots > 0 for slots in self.booked.values()), self.booked
        assert not self.exclusive or self._used > 0, "an empty node is not held exclusively"
        assert self.withdrawing <= self.ahead.keys(), f"withdrawing {self.withdrawing - self.ahead.keys()} not ahead"

    @property
    def free(self) -> int:
        return self.capacity - self.used if self.up and not self.draining and not self.exclusive else 0

    @property
    def room_ahead(self) -> int:
        """Slots' worth of tasks that may still be sent ahead, while the node takes new tasks."""
        if not self.up or self.draining or self.exclusive:
            return 0
        depth = AHEAD_DEPTH_QUICK if self.quick else AHEAD_DEPTH
        return depth * self.capacity - sum(slots for _, _, slots in self.ahead.values())

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
    #: called when the queue was empty and a task joins it (also when undone): its job wants slots again
    on_refill: Callable[[], None] | None = field(default=None, compare=False, repr=False)

    def push(self, seq: int, slots: int) -> None:
        if seq not in self.queued:
            undo.note(partial(self._unpush, seq))
            self._repush(seq, slots)

    def peek(self) -> tuple[int, int] | None:
        return self.heap[0] if self.heap else None

    def pop(self) -> tuple[int, int]:
        seq, slots = heapq.heappop(self.heap)
        self.queued.discard(seq)
        undo.note(partial(self._repush, seq, slots))
        return seq, slots

    def remove(self, seq: int) -> None:
        """Take a task off the queue wherever it is; the rest keeps its heap order (pops stay oldest first)."""
        if seq in self.queued:
            slots = next(slots for queued, slots in self.heap if queued == seq)
            undo.note(partial(self._repush, seq, slots))
            self._unpush(seq)

    def clear(self) -> None:
        undo.note(partial(self._restore, list(self.heap)))
        self.heap.clear()
        self.queued.clear()

    # undoing (kiln.undo): a failed transaction puts the queue back as it was; pops stay in the same order
    def _unpush(self, seq: int) -> None:
        self.queued.discard(seq)
        self.heap = [entry for entry in self.heap if entry[0] != seq]
        heapq.heapify(self.heap)

    def _repush(self, seq: int, slots: int) -> None:
        self.queued.add(seq)
        heapq.heappush(self.heap, (seq, slots))
        if len(self.heap) == 1 and self.on_refill is not None:
            self.on_refill()

    def _restore(self, heap: list[tuple[int, int]]) -> None:
        self.heap = heap
        self.queued = {seq for seq, _ in heap}
        if heap and self.on_refill is not None:
            self.on_refill()

    def __len__(self) -> int:
        return len(self.heap)
