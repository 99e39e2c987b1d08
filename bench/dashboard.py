"""The dashboard's job page at scale, on a real `kiln serve`.

Writes a store holding one job of N tasks (a third completed, a tenth of the rest running, on two nodes that do
not exist, so nothing runs), starts `kiln serve` on it, signs in, and times GET of the job's page: the first
page, a page deep in the list (after the 99% mark), filtered by state and by exit code, and an htmx refresh.
Beside them, as the baseline measured in the same run, the time of GET /jobs/{job}/tasks through the SDK
(the whole list, 1,000 a page): what a page that rendered every row would at least cost.

Prints figures; asserts nothing about speed.

    python bench/dashboard.py [--tasks 100000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from kiln.cli.embedded import EmbeddedServer
from kiln.core import task as task_rules
from kiln.store import rows
from kiln.store.database import Database
from kiln.testing import make_client

T0 = datetime(2026, 1, 1, tzinfo=UTC)
JOB = "big"


def _task(i: int) -> dict[str, Any]:
    """Task i as the server stores it (core.task.new_row), then in the state the bench wants it."""
    doc = {"id": f"t{i}", "commandLine": "/bin/true", "requiredSlots": 1, "constraints": {"maxTaskRetryCount": 0}}
    row = task_rules.new_row(JOB, doc, now=T0, etag=rows.new_etag())
    completed, running = i % 3 == 0, i % 3 != 0 and i % 10 == 1
    if completed or running:
        started = T0 + timedelta(milliseconds=10 * i)
        row.update(state="running", node_id=f"n{i % 2}", start_time=started)
    if completed:
        failed = i % 7 == 0
        row.update(state="completed", end_time=row["start_time"] + timedelta(seconds=1), exit_code=3 if failed else 0)
        row["result"] = "failure" if failed else "success"
    return row


def _write_store(data_dir: Path, n: int) -> None:
    """The job and its tasks, as the server would have stored them (its pool is not there: nothing runs)."""
    data_dir.mkdir(parents=True)
    database = Database(f"sqlite:///{data_dir / 'kiln.db'}")
    database.migrate()
    job = {
        "key": JOB,
        "id": JOB,
        "seq": 1,
        "spec": {"id": JOB, "poolInfo": {"poolId": "gone"}, "priority": 0, "onAllTasksComplete": "noaction",
                 "constraints": {"maxWallClockTime": "P10675199DT2H48M5.4775807S", "maxTaskRetryCount": 0}},
        "state": "active",
        "state_transition_time": T0,
        "pool_key": "gone",
        "priority": 0,
        "creation_time": T0,
        "last_modified": T0,
        "etag": rows.new_etag(),
    }  # fmt: skip
    with database.engine.begin() as conn:
        rows.insert_rows(conn, rows.jobs, [job])
        made = [_task(i) for i in range(n)]
        for state in ("active", "running", "completed"):  # rows of one insert share their columns
            rows.insert_rows(conn, rows.tasks, [row for row in made if row["state"] == state])
    database.close()


def _median_ms(call, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        call()
        times.append(1000 * (time.perf_counter() - began))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=100_000)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="kiln-bench-dashboard-"))
    os.chmod(base, 0o755)
    try:
        _write_store(base / "data", args.tasks)
        with EmbeddedServer(base / "data", env={"KILN_LOG_LEVEL": "warning"}) as server:
            browser = httpx.Client(base_url=server.endpoint, timeout=300)
            browser.post("/ui/login", data={"key": server.account_key, "next": "/"})
            deep = int(args.tasks * 0.99)
            pages = {
                "first page": {},
                f"after seq {deep:,}": {"after": str(deep)},
                "state failed": {"state": "failed"},
                "exit code 3": {"exit_code": "3"},
            }
            print(f"job of {args.tasks:,} tasks: GET /ui/jobs/{JOB}, median of 5 (ms)")
            for name, params in pages.items():
                response = browser.get(f"/ui/jobs/{JOB}", params=params)
                response.raise_for_status()
                ms = _median_ms(lambda p=params: browser.get(f"/ui/jobs/{JOB}", params=p))
                print(f"  {name:<22} {ms:8.1f}  ({len(response.content) // 1024} KiB)")
            refresh = _median_ms(lambda: browser.get(f"/ui/jobs/{JOB}", headers={"HX-Request": "true"}))
            print(f"  {'htmx refresh':<22} {refresh:8.1f}")
            client = make_client(server)
            listing = _median_ms(lambda: sum(1 for _ in client.list_tasks(JOB)), repeat=1)
            print(f"baseline: the SDK listing all {args.tasks:,} tasks: {listing:.1f} ms")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
