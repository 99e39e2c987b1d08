"""List pages that seek (keyset): each page reads on from the key of the last row it looked at, in key order,
never from an offset, so page 50 costs what page 1 does and a row deleted between pages skips nothing.

A ``$filter`` (kiln.core.filters terms) is turned into SQL where its properties map to columns; the store's
indexes then hand over only matching rows. What has no column (a node's computed state, a time finer than
the store keeps, an id range) is left to the caller's predicate on each row read: still correct, still a
seek, but it reads at most `EXAMINE` rows per page, answering a shorter page (even an empty one) with a
continuation when it runs out, as Batch does, so one request never walks a whole table. Likewise a filter
SQL serves but no index narrows (an exit code range, a time) looks at most `SPAN` seqs on per page, so the
database walks at most that much of a long list's index per request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

from sqlalchemy import Column, ColumnElement, Connection, Select, and_, false, func, not_, or_, true

from kiln.core import filters

Row: TypeAlias = dict[str, Any]
#: the most rows a page with a filter the store cannot serve reads before it answers with what it found
EXAMINE = 500
#: how far past its start (in seqs) a page looks when no index narrows its filter
SPAN = 20_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Field:
    """A filterable property held in a column: what literals it compares with, and how."""

    column: Column
    kind: str  #: string, int or time
    #: a case-sensitive id whose lower-case key column is indexed: equality seeks through the key
    key: Column | None = None


#: filter path → its field; a path not here is left to the predicate
Fields: TypeAlias = Mapping[str, Field]


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[Any]  #: the rows, or what the caller made of each
    #: the key to read on after (None: this was the last page)
    after: Any


def condition(term: filters.Term, fields: Fields) -> ColumnElement[bool] | None:
    """`term` as SQL over `fields`, None when any part of it is not in a column (the predicate must decide)."""
    if isinstance(term, filters.Compare):
        return _compare(term, fields.get(term.path))
    if isinstance(term, filters.StartsWith):
        return _starts_with(term, fields.get(term.path))
    if isinstance(term, filters.Not):
        inner = condition(term.part, fields)
        return None if inner is None else not_(inner)
    parts = [condition(part, fields) for part in term.parts]
    if any(part is None for part in parts):
        return None
    return and_(*parts) if isinstance(term, filters.AllOf) else or_(*parts)  # type: ignore[arg-type]


def conditions(term: filters.Term | None, fields: Fields) -> tuple[list[ColumnElement[bool]], bool]:
    """(SQL for what the store can serve, whether a part is left to the predicate): the parts of a top-level
    `and` are served one by one, so an unservable part leaves the others to the indexes."""
    if term is None:
        return [], False
    parts = term.parts if isinstance(term, filters.AllOf) else (term,)
    served = [condition(part, fields) for part in parts]
    return [part for part in served if part is not None], any(part is None for part in served)


def page(
    conn: Connection,
    scope: Select,
    served: list[ColumnElement[bool]],
    key: Column,
    after: Any,
    count: int,
    keep: Callable[[Row], bool] | None = None,
    span: int | None = None,
) -> Page:
    """Up to `count` rows of `scope` that `served` keeps, past `after` in `key` order. keep: the predicate for
    what SQL left over. span: look at most this far past `after` (an int key), for a filter no index narrows."""
    query = scope.where(*served)
    end = None if span is None else after + span

    def past(start: Any, limit: int) -> list[Row]:
        window = query.where(key > start) if end is None else query.where(key > start, key <= end)
        result = conn.execute(window.order_by(key).limit(limit))
        names = list(result.keys())
        return [dict(zip(names, row)) for row in result.all()]  # a third of the cost of .mappings()

    def read_through() -> Any:
        """Where the next page starts once this one has read all its window: past its end, if the list goes on."""
        return end if end is not None and _goes_on(conn, scope, key, end) else None

    if keep is None:
        rows = past(after, count + 1)
        return Page(rows[:count], rows[count - 1][key.name]) if len(rows) > count else Page(rows, read_through())
    kept: list[Row] = []
    examined, batch = 0, min(EXAMINE, max(count + 1, 100))
    while examined < EXAMINE:
        rows = past(after, batch)
        for row in rows:
            examined += 1
            after = row[key.name]
            if keep(row):
                kept.append(row)
                if len(kept) == count:
                    return Page(kept, after if _goes_on(conn, scope, key, after) else None)
        if len(rows) < batch:
            return Page(kept, read_through())
    return Page(kept, after)


def _goes_on(conn: Connection, scope: Select, key: Column, after: Any) -> bool:
    """Whether the list has rows past `after`, matching or not (one step in the key's index)."""
    return conn.execute(scope.where(key > after).limit(1)).first() is not None


def _compare(term: filters.Compare, field: Field | None) -> ColumnElement[bool] | None:
    if field is None:
        return None
    column = field.column
    if term.kind == "null":
        return column.is_(None) if term.op == "eq" else column.is_not(None)
    value = _value(term, field)
    if value is None:
        return None
    if field.key is not None and term.op not in ("eq", "ne"):
        return None  # an id's order in the database's collation is not the wire's: the predicate compares
    compared: ColumnElement[bool] = getattr(column, _OPERATORS[term.op])(value)
    if term.op == "eq" and field.key is not None:
        compared = and_(field.key == value.lower(), compared)
    if term.op == "ne" and column.nullable:
        compared = or_(compared, column.is_(None))  # a missing value differs from any
    return compared


_OPERATORS = {"eq": "__eq__", "ne": "__ne__", "gt": "__gt__", "ge": "__ge__", "lt": "__lt__", "le": "__le__"}


def _value(term: filters.Compare, field: Field) -> Any:
    """The literal as the column holds it; None when the column cannot compare with it exactly."""
    if term.kind != field.kind:
        return None
    if term.kind != "time":
        return term.value
    microseconds, rest = divmod(term.value, 10)
    if rest:
        return None  # finer than the store keeps times: the predicate compares the 100 ns ticks
    try:
        return _EPOCH + timedelta(microseconds=microseconds)
    except OverflowError:
        return None


def _starts_with(term: filters.StartsWith, field: Field | None) -> ColumnElement[bool] | None:
    if field is None or field.kind != "string":
        return None
    if not term.prefix:
        return true() if term.wanted else false()
    head = func.substr(field.column, 1, len(term.prefix)) == term.prefix
    if term.wanted:
        return head
    return or_(not_(head), field.column.is_(None)) if field.column.nullable else not_(head)
