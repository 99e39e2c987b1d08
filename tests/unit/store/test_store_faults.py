"""A write the store itself fails (a full disk, an I/O error) stores nothing and answers Batch's 503 ServerBusy
(what the scheduler decided in memory for it is undone: tests/e2e/test_failed_commits.py, test_full_disk.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Connection

from kiln.errors import ServerBusy
from kiln.store.database import Database, sqlite_url


async def test_a_failed_write_is_server_busy_and_a_fault(tmp_path: Path) -> None:
    database = Database(sqlite_url(tmp_path))
    database.migrate()

    def fails(conn: Connection) -> None:
        conn.exec_driver_sql("INSERT INTO kept VALUES (1)")
        conn.exec_driver_sql("INSERT INTO no_such_table VALUES (1)")  # OperationalError, as a full disk is

    await database.write(lambda conn: conn.exec_driver_sql("CREATE TABLE kept (n INTEGER)"))
    try:
        with pytest.raises(ServerBusy) as refused:
            await database.write(fails)
        assert (refused.value.status, refused.value.code) == (503, "ServerBusy")
        await database.write(lambda conn: conn.exec_driver_sql("INSERT INTO kept VALUES (2)"))  # writes again
        assert await database.read(lambda conn: conn.exec_driver_sql("SELECT count(*) FROM kept").scalar()) == 1
    finally:
        database.close()
