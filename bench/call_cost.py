"""What one Batch call costs in CPU, on the client's side (azure-batch) and on Kiln's, on this machine.

A latency target is only reachable where the official client's own CPU leaves room for it: on a slow core the
SDK's deserialization of a page of 100 tasks alone can take ~45 ms. This bench measures, for a few calls, the
CPU this process spends in the SDK (`time.process_time()`) and the CPU the server spends (`/proc` of its
process), per call, over --calls calls:

* a page of 100 tasks (`list_tasks`, a job of 5,000 tasks), `get_job_task_counts`, `get_job`;
* `create_task_collection` of 100 and of 10 tasks (a pool without nodes: nothing runs).

Baseline, in the same run: a bare FastAPI route on uvicorn (httptools, uvloop, as Kiln serves) answering a
small JSON body, driven with httpx: the least any Python HTTP service on this machine spends per request.

    python bench/call_cost.py [--calls 200] [--rounds 3]

Prints medians over the rounds; asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
from azure.batch import BatchClient, models

from kiln.cli.embedded import EmbeddedServer, free_port
from kiln.testing import make_client

JOB, TASKS, PAGE = "cost", 5000, 100
BARE_APP = """
from fastapi import FastAPI
from fastapi.responses import Response
app = FastAPI()
@app.get("/jobs/{job_id}")
async def get_job(job_id: str) -> Response:
    return Response(b'{"id":"%s","state":"active"}' % job_id.encode(), media_type="application/json")
"""


def cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def per_call(server: psutil.Process, calls: int, call: Callable[[], object]) -> tuple[float, float]:
    """(client, server) CPU milliseconds per call."""
    server_before, client_before = cpu(server), time.process_time()
    for _ in range(calls):
        call()
    return (time.process_time() - client_before) / calls * 1e3, (cpu(server) - server_before) / calls * 1e3


def tasks(first: int, count: int) -> models.BatchTaskGroup:
    return models.BatchTaskGroup(
        task_values=[
            models.BatchTaskCreateOptions(id=f"t{i:07d}", command_line="/bin/true") for i in range(first, first + count)
        ]
    )


def kiln_costs(
    client: BatchClient, server: psutil.Process, calls: int, added: list[int]
) -> dict[str, tuple[float, float]]:
    def page() -> None:
        for _ in next(client.list_tasks(JOB, max_results=PAGE).by_page()):
            pass

    def add(count: int) -> Callable[[], None]:
        def one() -> None:
            client.create_task_collection(JOB, tasks(TASKS + added[0], count))
            added[0] += count

        return one

    return {
        f"a page of {PAGE} tasks": per_call(server, calls, page),
        "task counts": per_call(server, calls, lambda: client.get_job_task_counts(JOB)),
        "get_job": per_call(server, calls, lambda: client.get_job(JOB)),
        "add a collection of 100": per_call(server, max(calls // 10, 10), add(100)),
        "add a collection of 10": per_call(server, calls, add(10)),
    }


def bare_cost(calls: int, tmp: Path) -> float:
    """Server CPU milliseconds per GET of the bare FastAPI route."""
    (tmp / "bare_app.py").write_text(BARE_APP)
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "bare_app:app", "--port", str(port), "--log-level", "warning"]
    argv += ["--http", "httptools", "--loop", "uvloop", "--no-access-log"]
    proc = subprocess.Popen(argv, cwd=tmp)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
            for _ in range(100):
                try:
                    http.get("/jobs/j")
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            for _ in range(100):  # warm, as the Kiln server is by the job's adds
                http.get("/jobs/j")
            server = psutil.Process(proc.pid)
            return per_call(server, calls, lambda: http.get("/jobs/j").raise_for_status())[1]
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per figure and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; medians are reported")
    args = parser.parse_args()
    rounds: list[dict[str, tuple[float, float]]] = []
    bare: list[float] = []
    with tempfile.TemporaryDirectory(prefix="kiln-bench-cost-") as tmp:
        os.chmod(tmp, 0o755)  # task accounts reach the data dir under root
        kiln = EmbeddedServer(Path(tmp) / "data").start()
        client = make_client(kiln)
        try:
            client.create_job(models.BatchJobCreateOptions(id=JOB, pool_info=models.BatchPoolInfo(pool_id="none")))
            for first in range(0, TASKS, 100):
                client.create_task_collection(JOB, tasks(first, 100))
            server, added = psutil.Process(kiln.process.pid), [0]
            for _ in range(args.rounds):
                bare.append(bare_cost(args.calls, Path(tmp)))
                rounds.append(kiln_costs(client, server, args.calls, added))
        finally:
            client.close()
            kiln.stop()
    print(f"\nCPU per call, medians of {args.rounds} rounds, load average {os.getloadavg()[0]:.2f}")
    print(f"{'call':<28}{'azure-batch client':>20}{'kiln server':>14}")
    for name in rounds[0]:
        client_ms = statistics.median(r[name][0] for r in rounds)
        server_ms = statistics.median(r[name][1] for r in rounds)
        print(f"{name:<28}{client_ms:>17.2f} ms{server_ms:>11.2f} ms")
    print(f"{'baseline: bare FastAPI GET':<28}{'':>20}{statistics.median(bare):>11.2f} ms")


if __name__ == "__main__":
    main()
