"""Statistics counters (store.statistics) on SQLite and PostgreSQL: sums across transactions, the peak kept as
a maximum, start times kept from the first addition, and rows that go with what owns them."""

from __future__ import annotations

from datetime import timedelta

from tests.unit.store.test_store import T0, tx

from kiln.store import statistics
from kiln.store.database import Database

USAGE = {"user_cpu": 0.5, "kernel_cpu": 0.25, "wall_clock": 2.0, "read_ops": 3, "write_ops": 4, "write_bytes": 4096}


def _add(db: Database, at, peak: int, **counters: float) -> None:
    tally = statistics.Tally()
    tally.add_task(7, "j", USAGE, at)
    tally.add_owners([("job", "j"), statistics.ACCOUNT], {**USAGE, **counters}, peak, at)
    tally.add_owners([("job", "j")], {"succeeded": 1}, 0, at)  # twice in one transaction: added up before writing
    with tx(db) as conn:
        tally.write(conn)


def test_attempts_add_up_across_transactions_and_the_peak_is_a_maximum(db: Database) -> None:
    later = T0 + timedelta(minutes=1)
    _add(db, T0, 100, retries=1)
    _add(db, later, 50, failed=1)
    with tx(db) as conn:
        task = statistics.tasks(conn, [7, 8])
        job = statistics.owner(conn, "job", "j")
        account = statistics.owner(conn, *statistics.ACCOUNT)
    assert list(task) == [7]
    assert (task[7]["user_cpu"], task[7]["write_ops"], task[7]["read_bytes"]) == (1.0, 8, 0)
    assert job is not None and account is not None
    assert (job["retries"], job["failed"], job["succeeded"], job["peak_rss"]) == (1, 1, 2, 100)
    assert (job["start_time"], job["last_update_time"]) == (T0, later)
    assert (account["succeeded"], account["wall_clock"]) == (0, 4.0)


def test_rows_go_with_their_task_job_or_owner_but_the_accounts_stay(db: Database) -> None:
    _add(db, T0, 1)
    with tx(db) as conn:
        statistics.forget_task(conn, 7)
        assert statistics.tasks(conn, [7]) == {}
        statistics.forget_job(conn, "j")
        assert statistics.owner(conn, "job", "j") is None
        statistics.forget_owner(conn, "pool", "nothing")
        assert statistics.owner(conn, *statistics.ACCOUNT) is not None
