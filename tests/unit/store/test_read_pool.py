"""Reads run on reader threads of their own (store.database.Database.read), on SQLite and PostgreSQL: a read
answers while the writer holds a transaction open, and while another read is held up. Nothing here is timed:
each held transaction waits on an event the test sets only after the other read has answered (a read that
waited for it would never answer, and the hang guard would fail the test)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection
from tests.unit.store.test_store import job_row, pool_row, tx

from kiln.store import rows
from kiln.store.database import Database

#: not a timing: only a guard so that a read that waits forever fails the test instead of hanging it
HANG_GUARD = 120


def _seed(db: Database) -> None:
    with tx(db) as conn:
        rows.insert_rows(conn, rows.pools, [pool_row()])
        rows.insert_rows(conn, rows.jobs, [job_row("j1", seq=1)])


def _holding(entered: threading.Event, release: threading.Event, then: Callable[[Connection], Any]):
    def work(conn: Connection) -> Any:
        result = then(conn)
        entered.set()
        release.wait()
        return result

    return work


async def _hold_the_writer(db: Database, entered: threading.Event, release: threading.Event) -> Any:
    """A write transaction left open (a job inserted, not committed) until `release`.

    PostgreSQL's writes run on the store thread: hold that one. SQLite's run on the loop, which a held
    transaction would stop: hold the database's write lock from a thread instead, as a long write would."""
    insert = _holding(entered, release, lambda conn: rows.insert_rows(conn, rows.jobs, [job_row("j2", seq=2)]))
    if db.engine.dialect.name == "postgresql":
        return asyncio.ensure_future(db.write(insert))

    def on_a_thread() -> None:
        with db.engine.connect() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            insert(conn)
            conn.exec_driver_sql("COMMIT")

    return asyncio.ensure_future(asyncio.to_thread(on_a_thread))


async def test_a_read_answers_while_a_write_transaction_is_open(db: Database) -> None:
    _seed(db)
    entered, release = threading.Event(), threading.Event()
    held = await _hold_the_writer(db, entered, release)
    try:
        await asyncio.wait_for(asyncio.to_thread(entered.wait), HANG_GUARD)
        seen = await asyncio.wait_for(
            db.read(lambda conn: sorted(r["key"] for r in rows.find(conn, rows.jobs))), HANG_GUARD
        )
        assert seen == ["j1"]  # the open write's job is not there yet
    finally:
        release.set()
        await held
    assert await db.read(lambda conn: sorted(r["key"] for r in rows.find(conn, rows.jobs))) == ["j1", "j2"]


async def test_a_read_answers_while_another_read_is_held(db: Database) -> None:
    _seed(db)
    entered, release = threading.Event(), threading.Event()
    held = asyncio.ensure_future(db.read(_holding(entered, release, lambda conn: rows.find(conn, rows.jobs))))
    try:
        await asyncio.wait_for(asyncio.to_thread(entered.wait), HANG_GUARD)
        job = await asyncio.wait_for(db.read(lambda conn: rows.get(conn, rows.jobs, key="j1")), HANG_GUARD)
        assert job is not None and job["id"] == "j1"
    finally:
        release.set()
        await held
