"""One job grown to N tasks on a real `kiln serve`, driven by the azure-batch SDK: how reads cost as it grows.

The job's pool has no nodes, so every task stays active (the store holds N rows, the scheduler's queue N
entries). At each checkpoint (N/4, N/2, N by default) it measures, over loopback:

* add rate: tasks per second to reach the checkpoint, collections of 100 on 4 client threads;
* then how long the server stays busy after the adds, and its CPU meanwhile (work a burst leaves behind
  would show here): the reads are measured once it is idle;
* get_job_task_counts: p50/p99 of --count-samples calls (200 by default: a call costs ~2 ms, and the p99 of
  20 calls is only their slowest);
* the CPU per counts call and per page of the walks on both sides: the server's, and this process's (the
  SDK's), which shares the cores and on a slow machine takes most of a page's time;
* list_tasks page 1 and page 50 (pages of 100: page 50 starts at task 4,901), each page walk timed
  page by page, --walks walks: p50/p99 of the page-1 and page-50 requests; the job's last page (its
  continuation made as the server makes one, seeking past the last 100 tasks' seqs) and page 1 with
  `$select=id,state` (the columns read are trimmed), --samples calls each;
* list_tasks first page under each of FILTERS (state, exit code, result, ids, times: some keep every task,
  some none, some a few), --samples calls each;
* the same pages read by --clients clients at once, each walking --client-pages pages: p50/p99 per page
  (each client a process of its own, as separate programs would be: threads of one process would queue
  on its GIL, and the figure would measure the bench);
* get_task while one client keeps listing with a filter that keeps no task: p50/p99;
* the server's RSS (VmRSS of its process; the pool has no nodes, so no node workers) after each checkpoint;
* at the end, restart: SIGTERM, then a new server on the same data until it answers a list of pools.

A figure with a target of issue 21 (at 1,000,000 tasks; 20 clients on a 20,000-task job) prints it after
its p50/p99.

`--src DIR` (repeatable) runs the server from each source tree in turn (PYTHONPATH), `--rounds` times,
alternating, so before and after are measured side by side on this machine's drifting speed:

    python bench/scale.py --tasks 20000 --src /work/main/src --src src --rounds 2

Prints one line per (source, round, checkpoint, figure); asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import multiprocessing
import os
import re
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from azure.batch import BatchClient, models
from azure.core.credentials import AzureNamedKeyCredential

from kiln.cli.embedded import EmbeddedServer, free_port
from kiln.testing import create_pool_and_wait, make_client

JOB = "scale"
COLLECTION = 100
ADD_THREADS = 4
PAGE = 100
FAR_PAGE = 50
#: first pages measured: (name, $filter); every task is active, as the pool has no nodes
FILTERS = [
    ("state active (all)", "state eq 'active'"),
    ("state completed (none)", "state eq 'completed'"),
    ("exitCode eq 1 (none)", "executionInfo/exitCode eq 1"),
    ("exitCode gt 0 (none)", "executionInfo/exitCode gt 0"),
    ("result failure (none)", "executionInfo/result eq 'failure'"),
    ("id eq (one)", "id eq 't0000500'"),
    ("startswith id (100)", "startswith(id,'t00001')"),
    ("creationTime past (all)", "creationTime gt '2000-01-01T00:00:00Z'"),
    ("state active and id lt (predicate)", "state eq 'active' and id lt 't0000050'"),
]


#: issue 21's targets: p99 at most this many ms
TARGETS = {
    "counts": 5,
    "page 1": 50,
    f"page {FAR_PAGE}": 50,
    "last page": 50,
    "page 1 $select=id,state": 50,
    **{f"filter {name}": 50 for name, _ in FILTERS},
    "get_task beside a filtered list": 20,
    "get_task_counts beside a filtered list": 20,
}
CLIENTS_TARGET = 300  #: 20 clients paging a 20,000-task job


def timed(call: Callable[[], Any]) -> float:
    """Milliseconds one call takes."""
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1000


def percentiles(samples: list[float | None]) -> str:
    ordered = sorted(s for s in samples if s is not None)
    if not ordered:
        return f"{'-':>7} {'-':>7}"
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return f"{statistics.median(ordered):7.1f} {p99:7.1f}"


def add_tasks(client: BatchClient, start: int, stop: int, *, numeric: bool = False) -> float:
    """Tasks start..stop-1 (ids t0000000..., or 0... if numeric) in collections on ADD_THREADS threads; tasks
    per second."""

    def add(first: int) -> None:
        specs = [
            models.BatchTaskCreateOptions(id=str(i) if numeric else f"t{i:07d}", command_line="/bin/true")
            for i in range(first, min(first + COLLECTION, stop))
        ]
        client.create_task_collection(JOB, models.BatchTaskGroup(task_values=specs))

    began = time.perf_counter()
    with ThreadPoolExecutor(ADD_THREADS) as pool:
        list(pool.map(add, range(start, stop, COLLECTION)))
    return (stop - start) / (time.perf_counter() - began)


def page_walk(client: BatchClient) -> tuple[float, float | None, int]:
    """(ms of page 1, ms of page FAR_PAGE or None if the job has fewer, pages read) of one walk through the
    job's first FAR_PAGE pages."""
    pages = client.list_tasks(JOB, max_results=PAGE).by_page()
    times = []
    for _ in range(FAR_PAGE):
        start = time.perf_counter()
        if next(pages, None) is None:
            break
        times.append((time.perf_counter() - start) * 1000)
    return times[0], times[FAR_PAGE - 1] if len(times) == FAR_PAGE else None, len(times)


def measure(
    server: EmbeddedServer,
    client: BatchClient,
    samples: int,
    count_samples: int,
    walks: int,
    clients: int,
    client_pages: int,
) -> dict[str, str]:
    """The read figures at one checkpoint. What this process holds by then (the SDK, the adds' leftovers) is
    frozen out of its garbage collector first: a full collection of it took up to ~50 ms, and one landing
    inside a timed call was the p99 of a figure that measures the server."""
    gc.collect()
    gc.freeze()
    spent, spent_here = server_cpu_ms(server), client_cpu_ms()
    counts = [timed(lambda: client.get_job_task_counts(JOB)) for _ in range(count_samples)]
    counts_cpu, spent = (server_cpu_ms(server) - spent) / count_samples, server_cpu_ms(server)
    counts_client_cpu, spent_here = (client_cpu_ms() - spent_here) / count_samples, client_cpu_ms()
    walked = [page_walk(client) for _ in range(walks)]
    pages = sum(w[2] for w in walked)
    figures = {
        "counts": percentiles(counts),
        "server CPU ms per counts": f"{counts_cpu:7.1f}",
        "client CPU ms per counts": f"{counts_client_cpu:7.1f}",
        "page 1": percentiles([w[0] for w in walked]),
        f"page {FAR_PAGE}": percentiles([w[1] for w in walked]),
        "server CPU ms per page (walks)": f"{(server_cpu_ms(server) - spent) / pages:7.1f}",
        "client CPU ms per page (walks)": f"{(client_cpu_ms() - spent_here) / pages:7.1f}",
    }
    last = last_page_link(client)
    figures["last page"] = percentiles(
        [timed(lambda: next(client.list_tasks(JOB).by_page(continuation_token=last))) for _ in range(samples)]
    )
    spent = server_cpu_ms(server)
    figures["page 1 $select=id,state"] = percentiles(
        [
            timed(lambda: next(client.list_tasks(JOB, max_results=PAGE, select=["id", "state"]).by_page()))
            for _ in range(samples)
        ]
    )
    figures["server CPU ms per $select page"] = f"{(server_cpu_ms(server) - spent) / samples:7.1f}"
    for name, text in FILTERS:

        def first_page(text: str = text) -> None:
            next(client.list_tasks(JOB, max_results=PAGE, filter=text).by_page())

        figures[f"filter {name}"] = percentiles([timed(first_page) for _ in range(samples)])
    spent = server_cpu_ms(server)
    figures[f"{clients} clients paging"] = percentiles(concurrent_pages(server, clients, client_pages))
    figures["server CPU ms per page (clients)"] = f"{(server_cpu_ms(server) - spent) / clients / client_pages:7.1f}"
    beside = {
        "get_task": lambda: client.get_task(JOB, "t0000001"),
        "get_task_counts": lambda: client.get_job_task_counts(JOB),
    }
    for name, call in beside.items():
        figures[f"{name} beside a filtered list"] = percentiles(reads_beside_a_list(client, samples, call))
    return figures


def last_page_link(client: BatchClient) -> str | None:
    """The link to the job's last page of PAGE tasks: page 1's next link, seeking past the seq before them
    (the job's tasks have seqs 1..N, made in order: its pool has no job manager)."""
    pages = client.list_tasks(JOB, max_results=PAGE).by_page()
    next(pages)
    link = pages.continuation_token
    if link is None:  # one page: page 1 is the last
        return None
    total = client.get_job_task_counts(JOB).task_counts.active  # every task stays active
    token = base64.urlsafe_b64encode(f"after:{json.dumps(max(total - PAGE, 0))}".encode()).decode().rstrip("=")
    return re.sub(r"(\$|%24)skiptoken=[^&]*", f"%24skiptoken={token}", link)


def concurrent_pages(server: EmbeddedServer, clients: int, pages: int) -> list[float | None]:
    """ms of each page request when `clients` client processes walk the job's first `pages` pages at once."""
    context = multiprocessing.get_context("fork")  # all at once: a forked worker needs no imports
    ready = context.Barrier(clients)
    setup = (server.endpoint, server.account_name, server.account_key, ready)
    with ProcessPoolExecutor(clients, context, initializer=_client_process, initargs=setup) as pool:
        return [ms for times in pool.map(_walk_pages, [pages] * clients) for ms in times]


_process_client: BatchClient | None = None
_all_ready: Any = None


def _client_process(endpoint: str, name: str, key: str, ready: Any) -> None:
    global _process_client, _all_ready
    _process_client = BatchClient(endpoint, AzureNamedKeyCredential(name, key))
    _all_ready = ready


def _walk_pages(pages: int) -> list[float]:
    """ms of each of the first `pages` pages, once every client process is ready to walk."""
    assert _process_client is not None
    client = _process_client
    _all_ready.wait(timeout=120)
    listed = client.list_tasks(JOB, max_results=PAGE).by_page()
    return [timed(lambda: next(listed, None)) for _ in range(pages)]


def reads_beside_a_list(client: BatchClient, samples: int, call: Callable[[], Any]) -> list[float | None]:
    """ms of `call` while another client keeps reading the first page of a filter that keeps no task."""
    stop = threading.Event()

    def keep_listing() -> None:
        while not stop.is_set():
            next(client.list_tasks(JOB, max_results=PAGE, filter="executionInfo/exitCode gt 0").by_page())

    with ThreadPoolExecutor(1) as pool:
        lister = pool.submit(keep_listing)
        try:
            return [timed(call) for _ in range(samples)]
        finally:
            stop.set()
            lister.result()


def client_cpu_ms() -> float:
    """This process's CPU: the SDK's side of the sequential calls, on the same cores as the server."""
    return time.process_time() * 1e3


def server_cpu_ms(server: EmbeddedServer) -> float:
    """The CPU time the server process has used (user and system, all its threads), in ms: a figure the
    machine's load disturbs far less than latencies."""
    assert server.process is not None
    fields = Path(f"/proc/{server.process.pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def settle(
    server: EmbeddedServer, idle_ms: float = 25.0, window: float = 0.5, limit: float = 120.0
) -> tuple[float, float]:
    """Wait until the server uses under idle_ms of CPU in a window (whatever a burst of adds leaves behind is
    done), so that the reads measure the server at rest; (seconds, CPU ms) it took."""
    began, first = time.perf_counter(), server_cpu_ms(server)
    last = first
    while time.perf_counter() - began < limit:
        time.sleep(window)
        now = server_cpu_ms(server)
        if now - last < idle_ms:
            break
        last = now
    return time.perf_counter() - began - window, server_cpu_ms(server) - first


def rss_mb(server: EmbeddedServer) -> float:
    """The server process's resident set, in MB."""
    assert server.process is not None
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(src: str, tasks: int, checkpoints: list[int], args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        os.chmod(tmp, 0o755)  # kiln serve wants a data dir task accounts can pass through
        os.environ["PYTHONPATH"] = os.path.abspath(src)  # the server subprocess runs this tree
        server = EmbeddedServer(Path(tmp) / "data", port=free_port()).start()
        try:
            client = make_client(server)
            pool_id = create_pool_and_wait(client, nodes=0)
            client.create_job(models.BatchJobCreateOptions(id=JOB, pool_info=models.BatchPoolInfo(pool_id=pool_id)))
            added = 0
            for checkpoint in checkpoints:
                rate = add_tasks(client, added, checkpoint)
                added = checkpoint
                report(src, checkpoint, "add/s", f"{rate:7.0f}")
                seconds, background = settle(server)
                report(src, checkpoint, "s until the server is idle after the adds", f"{seconds:7.1f}")
                report(src, checkpoint, "server CPU ms meanwhile", f"{background:7.0f}")
                figures = measure(
                    server, client, args.samples, args.count_samples, args.walks, args.clients, args.client_pages
                )
                for name, figure in figures.items():
                    report(src, checkpoint, name, figure)
                report(src, checkpoint, "server RSS MB", f"{rss_mb(server):7.0f}")
            if args.restart:
                server.stop()
                began = time.perf_counter()
                server.start(timeout=600)
                report(src, added, "restart s", f"{time.perf_counter() - began:7.1f}")
                report(src, added, "server RSS MB after restart", f"{rss_mb(server):7.0f}")
        finally:
            server.stop()


def report(src: str, tasks: int, name: str, figure: str) -> None:
    target = TARGETS.get(name, CLIENTS_TARGET if name.endswith("clients paging") else None)
    print(f"{src:24} {tasks:8} {name:38} {figure}" + (f"  (target p99 <= {target})" if target else ""), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--checkpoints", type=int, default=3, help="measure at N/c, 2N/c, ... N")
    parser.add_argument("--samples", type=int, default=20, help="calls per page and filter figure")
    parser.add_argument("--count-samples", type=int, default=200, help="calls for the task counts figure")
    parser.add_argument("--walks", type=int, default=3, help="page walks per page-1/page-50 figure")
    parser.add_argument("--clients", type=int, default=20, help="clients paging the job at once")
    parser.add_argument("--client-pages", type=int, default=5, help="pages each of those clients reads")
    parser.add_argument("--src", action="append", help="source tree(s) to run the server from, alternating")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--no-restart", dest="restart", action="store_false", help="skip the restart at the end")
    parser.add_argument("--dir", help="where the temporary data dirs go")
    args = parser.parse_args()
    checkpoints = [args.tasks * (i + 1) // args.checkpoints // COLLECTION * COLLECTION for i in range(args.checkpoints)]
    sources = args.src or [str(Path(__file__).resolve().parents[1] / "src")]
    print(f"{'source':24} {'tasks':>8} {'figure (ms p50 p99 unless named)':38}", flush=True)
    for _ in range(args.rounds):
        for src in sources:
            run(src, args.tasks, checkpoints, args)


if __name__ == "__main__":
    main()
