"""Statements that run for every task, executed on the driver's cursor.

SQLAlchemy compiles a statement once, but each execution still costs a cache lookup, a parameter pass
through each type's processor chain and a result's metadata: on the paths every task takes (its add,
its dispatch, its end) that was more than the database's own work. A Prepared statement is compiled
once per dialect; running it converts each value with the processor SQLAlchemy itself would use for
its column (so types and storage formats stay SQLAlchemy's) and gives the driver plain tuples or
dicts. It runs on the connection of the caller's transaction, which commits it as usual.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, bindparam
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]  #: bind names, in the SQL's order when the paramstyle is positional
    positional: bool
    binds: tuple[Processor, ...]
    columns: tuple[str, ...]  #: result column names (a SELECT's)
    #: (position, processor) of the result columns that have one: most (ints, strings) have none
    results: tuple[tuple[int, Callable[[Any], Any]], ...]

    def parameters(self, values: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        converted = [values[name] if bind is None else bind(values[name]) for name, bind in zip(self.names, self.binds)]
        return tuple(converted) if self.positional else dict(zip(self.names, converted))


class Prepared:
    """One statement, compiled for each dialect it meets."""

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._compiled: dict[str, _Compiled] = {}

    def execute_many(self, conn: Connection, params: Sequence[Mapping[str, Any]]) -> int:
        """The statement once per parameter set (an INSERT or UPDATE); how many rows it changed in all."""
        if not params:
            return 0
        compiled = self._for(conn.dialect)
        with _cursor(conn, compiled.sql) as cursor:
            cursor.executemany(compiled.sql, [compiled.parameters(p) for p in params])
            return cursor.rowcount

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """A SELECT's rows as dicts, each value as SQLAlchemy would have returned it."""
        compiled = self._for(conn.dialect)
        with _cursor(conn, compiled.sql) as cursor:
            cursor.execute(compiled.sql, compiled.parameters(params))
            found = cursor.fetchall()
        columns, results = compiled.columns, compiled.results
        if not results:
            return [dict(zip(columns, row)) for row in found]
        converted = []
        for row in found:
            values = list(row)
            for position, result in results:
                values[position] = result(values[position])
            converted.append(dict(zip(columns, values)))
        return converted

    def _for(self, dialect: Dialect) -> _Compiled:
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            compiled = self._compiled[dialect.name] = _compile(self.statement, dialect)
        return compiled


def upsert_base(table: Table, dialect: str) -> postgresql.Insert | sqlite.Insert:
    """An INSERT of every column of the table, each bound by its name, in the dialect's own form (the one with
    on_conflict_do_update): the start of a counter's or a row's upsert."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(table).values({c.name: bindparam(c.name, type_=c.type) for c in table.columns})


@contextlib.contextmanager
def _cursor(conn: Connection, sql: str) -> Iterator[Any]:
    """A cursor of the transaction's connection; the driver's errors raised as SQLAlchemy raises them
    (IntegrityError and the like), so callers see one kind whichever way a statement ran."""
    dbapi_error = conn.dialect.loaded_dbapi.Error
    cursor = conn.connection.cursor()
    try:
        yield cursor
    except dbapi_error as error:
        raise DBAPIError.instance(sql, None, error, dbapi_error, dialect=conn.dialect) from error
    finally:
        cursor.close()


def _compile(statement: ClauseElement, dialect: Dialect) -> _Compiled:
    compiled = statement.compile(dialect=dialect)
    assert isinstance(compiled, SQLCompiler), compiled  # a statement's compiler, not DDL's
    names = tuple(compiled.positiontup or ()) if compiled.positional else tuple(compiled.binds)
    binds = tuple(compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names)
    selected = getattr(statement, "selected_columns", ())
    return _Compiled(
        sql=compiled.string,
        names=names,
        positional=compiled.positional,
        binds=binds,
        columns=tuple(column.name for column in selected),
        results=tuple(
            (position, result)
            for position, column in enumerate(selected)
            if (result := column.type.dialect_impl(dialect).result_processor(dialect, None)) is not None
        ),
    )
