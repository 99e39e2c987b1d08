"""Memory that follows the store: in-memory changes made inside a store transaction are undone if it fails.

The scheduler decides inside the store's transaction, and its decisions change what it keeps in memory
(queues, booked slots, steps, prep records) as they go. If the transaction does not commit (a full disk, a
row that moved under it), memory must be as it was, or slots stay booked and tasks stay off their queues
until a restart. `Database` opens `recording()` around every write; while it is open, every change to a
tracked structure notes how to undo itself, and a transaction that raises (its commit included) plays the
notes back, newest first. Outside a transaction, tracked structures cost one context-variable read per change.

Tracked structures: `Tracked` objects (attribute assignments), `TrackedDict`, `TrackedSet`, `TrackedList`,
and plain dicts changed through `update()` (rows the store returned and memory keeps).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from functools import partial
from typing import Any, Generic, TypeVar

Undo = Callable[[], None]
K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

_notes: ContextVar[list[Undo] | None] = ContextVar("kiln_undo_notes", default=None)
_MISSING: Any = object()


@contextmanager
def recording() -> Iterator[None]:
    """Undo what the block changed in tracked memory if it raises. Nested, it belongs to the outer one."""
    if _notes.get() is not None:
        yield
        return
    notes: list[Undo] = []
    token = _notes.set(notes)
    try:
        yield
    except BaseException:
        _notes.reset(token)  # undoing must not note anything itself
        for undo in reversed(notes):
            undo()
        raise
    else:
        _notes.reset(token)


def note(undo: Undo) -> None:
    """How to undo a change just about to be made (nothing, outside a transaction)."""
    notes = _notes.get()
    if notes is not None:
        notes.append(undo)


def update(row: dict[str, Any], changes: Mapping[str, Any]) -> None:
    """`row.update(changes)` for a row memory keeps: undone with the transaction."""
    notes = _notes.get()
    if notes is not None:
        notes.append(partial(_put_back, row, {key: row.get(key, _MISSING) for key in changes}))
    row.update(changes)


def _put_back(row: dict[str, Any], old: Mapping[str, Any]) -> None:
    for key, value in old.items():
        if value is _MISSING:
            row.pop(key, None)
        else:
            row[key] = value


class Tracked:
    """Attribute assignments are undone with the transaction (for dataclasses and slotted classes)."""

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        notes = _notes.get()
        if notes is not None:
            old = getattr(self, name, _MISSING)
            if old is not _MISSING:  # a new object's fields being set: nothing to undo
                notes.append(partial(object.__setattr__, self, name, old))
        object.__setattr__(self, name, value)


class TrackedDict(dict[K, V], Generic[K, V]):
    """A dict whose changes are undone with the transaction."""

    __slots__ = ()

    def _note(self, key: K) -> None:
        notes = _notes.get()
        if notes is not None:
            notes.append(partial(self._restore, key, dict.get(self, key, _MISSING)))

    def _restore(self, key: K, old: V) -> None:
        if old is _MISSING:
            dict.pop(self, key, None)
        else:
            dict.__setitem__(self, key, old)

    def __setitem__(self, key: K, value: V) -> None:
        self._note(key)
        dict.__setitem__(self, key, value)

    def __delitem__(self, key: K) -> None:
        self._note(key)
        dict.__delitem__(self, key)

    def pop(self, key: K, *default: Any) -> Any:
        if key in self:
            self._note(key)
        return dict.pop(self, key, *default)

    def setdefault(self, key: K, default: V = None) -> V:  # type: ignore[assignment]
        if key not in self:
            self[key] = default
        return dict.__getitem__(self, key)

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def clear(self) -> None:
        note(partial(dict.update, self, dict(self)))
        dict.clear(self)

    def popitem(self) -> tuple[K, V]:
        raise NotImplementedError("TrackedDict.popitem: pop a named key instead")


class TrackedSet(set[T], Generic[T]):
    """A set whose changes are undone with the transaction."""

    __slots__ = ()

    def add(self, item: T) -> None:
        if item not in self:
            note(partial(set.discard, self, item))
            set.add(self, item)

    def discard(self, item: T) -> None:  # type: ignore[override]
        if item in self:
            note(partial(set.add, self, item))
            set.discard(self, item)

    def remove(self, item: T) -> None:
        if item not in self:
            raise KeyError(item)
        self.discard(item)

    def update(self, *others: Iterable[T]) -> None:
        for other in others:
            for item in other:
                self.add(item)

    def clear(self) -> None:
        note(partial(set.update, self, set(self)))
        set.clear(self)

    def pop(self) -> T:
        item = set.pop(self)
        note(partial(set.add, self, item))
        return item


class TrackedList(list[T], Generic[T]):
    """A short list whose changes are undone with the transaction (each change notes a copy of it)."""

    __slots__ = ()

    def _keep(self) -> None:
        notes = _notes.get()
        if notes is not None:
            notes.append(partial(self._restore, list(self)))

    def _restore(self, old: list[T]) -> None:
        list.__setitem__(self, slice(None), old)

    def append(self, item: T) -> None:
        self._keep()
        list.append(self, item)

    def extend(self, items: Iterable[T]) -> None:
        self._keep()
        list.extend(self, items)

    def remove(self, item: T) -> None:
        self._keep()
        list.remove(self, item)

    def pop(self, index: int = -1) -> T:  # type: ignore[override]
        self._keep()
        return list.pop(self, index)

    def clear(self) -> None:
        self._keep()
        list.clear(self)
