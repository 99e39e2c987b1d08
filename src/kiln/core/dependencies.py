"""Task dependencies (batch-semantics §6.4) as pure bookkeeping: reverse edges and unmet counters.

A task that has `dependsOn` and has never started waits until
- every id in `taskIds` names a task of the job that completed with dependencyAction `satisfy`
  (a missing parent is waited for: it may be added later), and
- for every integer in its `taskIdRanges` that some task of the job has as its id (`7`, `07`), one
  such task completed with `satisfy`. Integers no task has are not waited for; a task is never its
  own parent.
A parent that completed with `block` holds its dependents forever (Azure has no cancellation).

Every event costs time in proportion to the edges it touches, never to the size of the job: a chain
of n tasks or a fan-in over n parents costs O(n) in all. Ranges up to NARROW_RANGE wide are indexed
per integer; wider ones are matched against the job's numeric ids when the dependent is added, and
kept in a short list for ids added later.

A task that completed with `satisfy` leaves the graph's memory of keys (a job's history is not held):
a key the graph does not hold names a task that completed so, or no task at all, and a dependent added
later that names it asks the store which (`Stored`, one indexed lookup per add). An integer whose every
task completed with `satisfy` leaves its record for a bit (`met`: numeric ids come in runs, so a million
of them take ~150 kB); no range waits on it, and a record is made again from the bit when one of its tasks
changes (a new task with it, one that blocks after satisfying, one deleted).
"""

from __future__ import annotations

import heapq
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kiln.core.exit_conditions import DependencyAction
from kiln.undo import Tracked, TrackedDict, TrackedSet

#: Ranges at most this wide are indexed integer by integer; wider ones are scanned.
NARROW_RANGE = 256
#: Met integers are bits of ints this many bits wide, one int per run of integers.
MET_CHUNK = 1024
#: Each time the tasks waiting, or those not satisfied, fall to a multiple of this (to none among them), tables
#: left far larger than their contents are made again.
FIT_EVERY = 4096
#: A table with more room than this per entry (bytes) is made again at its size (a fitted one has ~30-70).
ROOM_PER_ENTRY = 256

#: (task seq, required slots): what the scheduler's queue takes.
Runnable = tuple[int, int]
#: Which of these task keys the job's stored tasks have (the store's answer, inside the add's transaction).
Stored = Callable[[list[str]], set[str]]


def numeric_id(task_id: str) -> int | None:
    """The integer a task id stands for in taskIdRanges ("007" is 7), or None for other ids."""
    return int(task_id) if task_id.isascii() and task_id.isdigit() else None


@dataclass(slots=True)
class _Waiter(Tracked):
    """A task that has not started yet and has dependencies."""

    slots: int
    unmet: int = 0
    keys: tuple[str, ...] = ()
    numbers: set[int] = field(default_factory=TrackedSet)  #: numbers of its ranges it is indexed under
    wide: tuple[tuple[int, int], ...] = ()
    own_number: int | None = None


@dataclass(slots=True)
class _Number(Tracked):
    """The tasks whose ids stand for one integer."""

    tasks: int = 0
    satisfied: int = 0

    @property
    def unmet(self) -> bool:
        """A range dependency on this integer is unmet: some task has it and none has satisfied."""
        return self.tasks > 0 and self.satisfied == 0


class DependencyGraph:
    """Which tasks of one job wait for which. It holds the key of every task of the job that has not completed
    with satisfy, a record of every integer that such a task has as its id, and a bit for every other
    integer some task has (all of them completed with satisfy)."""

    def __init__(self) -> None:
        # tracked: the scheduler changes it inside store transactions, and a failed one undoes it (kiln.undo)
        #: keys of the job's tasks that have not completed with satisfy (waiting, running, or completed with
        #: block); a key not here is of a task that has, or of none
        self.unsatisfied: set[str] = TrackedSet()
        #: integers of numeric ids some task of which has not completed with satisfy
        self.numbers: dict[int, _Number] = TrackedDict()
        #: chunk (integer // MET_CHUNK) -> bits of the integers whose every task completed with satisfy
        self.met: dict[int, int] = TrackedDict()
        #: a met integer that several tasks have ("7", "07") -> how many; one has it where not listed
        self.met_tasks: dict[int, int] = TrackedDict()
        self.waiters: dict[int, _Waiter] = TrackedDict()
        self.by_key: dict[str, set[int]] = TrackedDict()  #: parent key -> waiting dependents naming it in taskIds
        self.by_number: dict[int, set[int]] = TrackedDict()  #: integer -> waiting dependents whose ranges hold it
        self.wide_waiters: set[int] = TrackedSet()  #: dependents with a range wider than NARROW_RANGE

    # ------------------------------------------------------------------ queries
    def waiting(self, seq: int) -> bool:
        waiter = self.waiters.get(seq)
        return waiter is not None and waiter.unmet > 0

    def unmet(self, seq: int) -> int:
        waiter = self.waiters.get(seq)
        return 0 if waiter is None else waiter.unmet

    # ------------------------------------------------------------------ events
    def add(self, tasks: Iterable[Mapping[str, Any]], stored: Stored | None = None) -> list[Runnable]:
        """Tasks added to the job (rows with seq, key, id, required_slots, spec); returns those that may run now.

        All of them become known as parents before any registers its own dependencies, so the order
        within one request does not matter. stored: which keys the job's stored tasks have, asked for the
        parents the graph does not hold (None: none has completed with satisfy; a parent not added yet is
        waited for until it is).
        """
        tasks = list(tasks)
        released: list[int] = []
        for task in tasks:
            self._add_parent(task["key"], task["id"], released)
        unknown = sorted(parents_named(tasks) - self.unsatisfied)
        satisfied = stored(unknown) if stored is not None and unknown else set()
        runnable: list[Runnable] = []
        for task in tasks:
            depends_on = task["spec"].get("dependsOn")
            if depends_on and self._register(task, depends_on, satisfied):
                continue
            runnable.append((task["seq"], task["required_slots"]))
        return runnable + self._runnable(released)

    def restore_met(self, numbers: Iterable[int]) -> None:
        """After a restart, before any task is added: the integers of the job's tasks that completed with satisfy,
        one per such task (its numeric id), as bits; the job's other tasks are then added as after any add."""
        for number, tasks in Counter(numbers).items():
            self._set_met(number, self.met_by(number) + tasks)

    def complete(self, key: str, satisfied: bool) -> list[Runnable]:
        """A task completed; with dependencyAction satisfy its dependents may now run (and its key leaves)."""
        if (key not in self.unsatisfied) == satisfied:
            return []
        if satisfied:
            self.unsatisfied.discard(key)
        else:  # completed with satisfy before, reactivated, and now blocks
            self.unsatisfied.add(key)
        released: list[int] = []
        step = -1 if satisfied else 1
        for dependent in self.by_key.get(key, ()):
            self._count(dependent, step, released)
        number = numeric_id(key)
        if number is not None and self._record(number) is not None:  # one the graph was never given has none
            self._change_number(number, lambda n: setattr(n, "satisfied", n.satisfied - step), released)
            self._settle(number)
        if satisfied and len(self.unsatisfied) % FIT_EVERY == 0:
            self.fit()
        return self._runnable(released)

    def started(self, seq: int) -> None:
        """The task left the queue for a node (or completed): it is gated no more, its edges go."""
        waiter = self.waiters.pop(seq, None)
        if waiter is None:
            return
        for key in waiter.keys:
            dependents = self.by_key.get(key)
            if dependents is not None:
                dependents.discard(seq)
                if not dependents:
                    del self.by_key[key]
        for number in waiter.numbers:
            dependents = self.by_number.get(number)
            if dependents is not None:
                dependents.discard(seq)
                if not dependents:
                    del self.by_number[number]
        self.wide_waiters.discard(seq)
        if len(self.waiters) % FIT_EVERY == 0:
            self.fit()

    def remove(self, seq: int, key: str) -> list[Runnable]:
        """A task was deleted: as a dependent it waits no more; as a parent it is missing again."""
        self.started(seq)
        released: list[int] = []
        was_satisfied = key not in self.unsatisfied
        self.unsatisfied.discard(key)
        if was_satisfied:
            for dependent in self.by_key.get(key, ()):
                self._count(dependent, 1, released)
        number = numeric_id(key)
        if number is not None and self._record(number) is not None:

            def forget(entry: _Number) -> None:
                entry.tasks -= 1
                entry.satisfied -= int(was_satisfied)

            self._change_number(number, forget, released)
            self._settle(number)
        return self._runnable(released)

    # ------------------------------------------------------------------ inner workings
    def fit(self) -> None:
        """Python's dicts and sets keep the room their largest size gave them: a table that has shrunk far below
        it is made again at its size, with the same contents (nothing for a transaction to undo), so the graph
        holds what its live tasks need, not what they once needed."""
        tables: tuple[dict[Any, Any], ...] = (self.numbers, self.waiters, self.by_key, self.by_number, self.met_tasks)
        for table in tables:
            if _roomy(table):
                contents = dict(table)
                dict.clear(table)
                dict.update(table, contents)
        if _roomy(self.unsatisfied):
            keys = set(self.unsatisfied)
            set.clear(self.unsatisfied)
            set.update(self.unsatisfied, keys)

    def _add_parent(self, key: str, task_id: str, released: list[int]) -> None:
        self.unsatisfied.add(key)
        number = numeric_id(task_id)
        if number is None:
            return
        if self._record(number) is None:
            self.numbers[number] = _Number()
            self._index_wide(number)
        self._change_number(number, lambda n: setattr(n, "tasks", n.tasks + 1), released)

    def met_by(self, number: int) -> int:
        """How many tasks have this met integer (0: it is not met)."""
        bits = self.met.get(number // MET_CHUNK, 0)
        return self.met_tasks.get(number, 1) if bits >> (number % MET_CHUNK) & 1 else 0

    def _record(self, number: int) -> _Number | None:
        """The integer's record, made again for a met one (its tasks all satisfied): wide ranges that hold it
        were not indexed under it while it was met, and are from now on."""
        entry = self.numbers.get(number)
        if entry is None and (tasks := self.met_by(number)):
            self._set_met(number, 0)
            entry = self.numbers[number] = _Number(tasks=tasks, satisfied=tasks)
            self._index_wide(number)
        return entry

    def _settle(self, number: int) -> None:
        """An integer no task has any more goes; one whose every task satisfied becomes a bit."""
        entry = self.numbers[number]
        if entry.tasks == 0 or entry.tasks == entry.satisfied:
            del self.numbers[number]
            self._set_met(number, entry.tasks)

    def _set_met(self, number: int, tasks: int) -> None:
        chunk, bit = divmod(number, MET_CHUNK)
        bits = self.met.get(chunk, 0)
        bits = bits | 1 << bit if tasks else bits & ~(1 << bit)
        if bits:
            self.met[chunk] = bits
        else:
            self.met.pop(chunk, None)
        if tasks > 1:
            self.met_tasks[number] = tasks
        else:
            self.met_tasks.pop(number, None)

    def _index_wide(self, number: int) -> None:
        """A new integer among the job's ids: waiting dependents whose wide ranges hold it now wait on it too."""
        for seq in self.wide_waiters:
            waiter = self.waiters[seq]
            if number != waiter.own_number and any(start <= number <= end for start, end in waiter.wide):
                waiter.numbers.add(number)
                self.by_number.setdefault(number, TrackedSet()).add(seq)

    def _change_number(self, number: int, change, released: list[int]) -> None:
        """Apply `change` to an integer's record; dependents on it count one more or one less unmet parent."""
        entry = self.numbers[number]
        before = entry.unmet
        change(entry)
        after = entry.unmet
        if before != after:
            for dependent in self.by_number.get(number, ()):
                self._count(dependent, 1 if after else -1, released)

    def _count(self, seq: int, step: int, released: list[int]) -> None:
        waiter = self.waiters[seq]
        waiter.unmet += step
        if waiter.unmet == 0:
            released.append(seq)

    def _register(self, task: Mapping[str, Any], depends_on: Mapping[str, Any], satisfied: set[str]) -> bool:
        """Index a new dependent under its parents; True if it has to wait. satisfied: the stored keys among
        those the graph does not hold (tasks that completed with satisfy)."""
        seq = task["seq"]
        own = numeric_id(task["id"])
        keys = tuple(dict.fromkeys(i.lower() for i in depends_on.get("taskIds") or ()))
        ranges = [(r["start"], r["end"]) for r in depends_on.get("taskIdRanges") or ()]
        wide = tuple(r for r in ranges if r[1] - r[0] + 1 > NARROW_RANGE)
        waiter = _Waiter(slots=task["required_slots"], keys=keys, wide=wide, own_number=own)
        self.waiters[seq] = waiter
        for key in keys:
            self.by_key.setdefault(key, TrackedSet()).add(seq)
            if key in self.unsatisfied or key not in satisfied:
                waiter.unmet += 1
        numbers = {n for start, end in ranges if end - start + 1 <= NARROW_RANGE for n in range(start, end + 1)}
        if wide:
            self.wide_waiters.add(seq)
            numbers.update(n for n in self.numbers if any(start <= n <= end for start, end in wide))
        numbers.discard(own)
        for number in numbers:
            waiter.numbers.add(number)
            self.by_number.setdefault(number, TrackedSet()).add(seq)
            entry = self.numbers.get(number)
            if entry is not None and entry.unmet:
                waiter.unmet += 1
        return waiter.unmet > 0  # its edges stay until it starts: a parent may still be deleted meanwhile

    def _runnable(self, released: Sequence[int]) -> list[Runnable]:
        """Released dependents that still wait on nothing (a later event of the same call may have re-blocked one)."""
        seen: set[int] = set()
        out: list[Runnable] = []
        for seq in released:
            waiter = self.waiters.get(seq)
            if seq in seen or waiter is None or waiter.unmet != 0:
                continue
            seen.add(seq)
            out.append((seq, waiter.slots))
        return out


#: A task as a graph is rebuilt from it: (seq, key, id, required slots, state, dependency action).
StoredTask = tuple[int, str, str, int, str, "str | None"]


class Rebuild:
    """A job's graph made again after a restart from what the store holds, holding no more than the graph held:
    first the job's completed tasks, a part at a time (one that completed with satisfy leaves its integer's bit
    at most), then its other tasks in seq order, with the store's answer for the parents their gated tasks name
    that none of them is (those completed with satisfy), as an add asks it."""

    def __init__(self, graph: DependencyGraph) -> None:
        self.graph = graph
        self.rows: list[Mapping[str, Any]] = []  #: completed otherwise than with satisfy: parents that never will

    def completed(self, part: Iterable[StoredTask]) -> None:
        """A part of the job's completed tasks, in seq order."""
        numbers = []
        for seq, key, task_id, slots, state, action in part:
            if action == DependencyAction.SATISFY:
                if (number := numeric_id(task_id)) is not None:
                    numbers.append(number)
            else:
                self.rows.append(
                    {"seq": seq, "key": key, "id": task_id, "required_slots": slots, "state": state, "spec": {}}
                )
        self.graph.restore_met(numbers)

    def uncompleted(self, rows: Iterable[Mapping[str, Any]]) -> list[str]:
        """The job's tasks that have not completed, in seq order (those never started with their spec); returns
        the keys to ask the store about: the parents their gated tasks name that none of the tasks is."""
        self.rows = list(heapq.merge(self.rows, rows, key=lambda row: row["seq"]))
        return sorted(parents_named(self.rows) - {row["key"] for row in self.rows})

    def add(self, stored: set[str], part: int) -> Iterator[None]:
        """Add the tasks a part at a time (a step per part); stored: the keys the store has of those asked."""
        for start in range(0, len(self.rows), part):
            self.graph.add(self.rows[start : start + part], stored.intersection)  # a later part's: waited for
            yield


def _roomy(table: dict[Any, Any] | set[Any]) -> bool:
    return sys.getsizeof(table) > ROOM_PER_ENTRY * len(table) + 4096


def parents_named(tasks: Iterable[Mapping[str, Any]]) -> set[str]:
    """The keys the tasks' taskIds name (ids are case-insensitive)."""
    return {key.lower() for task in tasks for key in (task["spec"].get("dependsOn") or {}).get("taskIds") or ()}


def check_allowed(job_spec: Mapping[str, Any], depends_on: Mapping[str, Any] | None) -> None:
    """dependsOn needs a job created with usesTaskDependencies (it cannot be switched on later)."""
    if depends_on is not None and not job_spec.get("usesTaskDependencies"):
        from kiln.errors import BadRequest

        raise BadRequest(
            "The job does not use task dependencies; create it with usesTaskDependencies set "
            "to add tasks with dependsOn.",
            code="TaskDependenciesNotSpecifiedOnJob",
        )
