"""Job data moved once per node by a job preparation task, against every task downloading it itself.

A local HTTP server (ThreadingHTTPServer on 127.0.0.1, in a thread) serves one file of random bytes and
counts every download: requests, complete downloads and bytes, per client. All nodes share 127.0.0.1, so a
client is told apart by the process that holds the connection's other end (psutil), which is a node's
worker process; warm-up tasks print their parent pid ($PPID, the worker) to name each worker's node.

Starts an EmbeddedServer (temp data dir) with a pool of 2 nodes x 4 slots, then, one after the other:

* job A: its jobPreparationTask fetches the file as a resource file (httpUrl, filePath data.bin) and runs
  /bin/true; N tasks each read $AZ_BATCH_JOB_PREP_WORKING_DIR/data.bin in full and exit 1 unless its size
  is right. Expected: exactly one download per node that ran tasks of A.
* job B: no preparation task; the same N tasks each fetch the file as their own resource file and read it
  from their working directory. When the disk is short (see --cleanup), each task deletes its copy after
  reading it, so the disk holds at most one copy per busy slot.

Each job gets its own URL (/a/data.bin, /b/data.bin), so the counts are per job. Tasks are added with
create_task_collection, 100 per call. Wall time runs from just before the first add (client clock) to the
latest executionInfo.endTime (server clock, same host). Job A is deleted before job B starts.

Prints figures, and PASS/MISS for "job A: downloads == nodes that ran its tasks"; asserts nothing.

    python bench/prep_transfer.py [--tasks 400] [--size-mb 50] [--cleanup auto|yes|no]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
from azure.batch import BatchClient, models

from kiln.cli.embedded import EmbeddedServer
from kiln.testing import create_pool_and_wait, make_client, read_task_file, shell, unique, wait_task_counts

NODES, SLOTS = 2, 4
PER_CALL = 100
MB = 1 << 20
FILE_NAME = "data.bin"
#: With --cleanup auto, job B keeps its copies only if they would take at most this share of free disk.
KEEP_SHARE = 0.10


# ---------------------------------------------------------------------------------------------- HTTP server
@dataclass
class Counts:
    requests: int = 0
    downloads: int = 0  #: responses sent in full
    bytes: int = 0  #: body bytes written (complete or not)


@dataclass
class DataServer:
    """Serves `payload` at /<job>/data.bin and counts per (job, client)."""

    payload: bytes
    server_pid: int | None = None  #: the kiln server: its descendants are the node workers
    node_of_pid: dict[int, str] = field(default_factory=dict)  #: worker pid -> node id (from the warm-up)
    counts: dict[tuple[str, str], Counts] = field(default_factory=lambda: defaultdict(Counts))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> DataServer:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                parts = self.path.split("?")[0].strip("/").split("/")
                if len(parts) != 2 or parts[1] != FILE_NAME:
                    self.send_error(404)
                    return
                key = (parts[0], outer.client_of(self.client_address[1]))
                with outer.lock:
                    outer.counts[key].requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(outer.payload)))
                self.end_headers()
                view, sent = memoryview(outer.payload), 0
                try:
                    while sent < len(view):
                        chunk = view[sent : sent + MB]
                        self.wfile.write(chunk)
                        sent += len(chunk)
                finally:
                    with outer.lock:
                        outer.counts[key].bytes += sent
                        outer.counts[key].downloads += sent == len(view)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="data-server", daemon=True)
        self.thread.start()
        return self

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def url(self, job: str) -> str:
        return f"http://127.0.0.1:{self.port}/{job}/{FILE_NAME}"

    def client_of(self, peer_port: int) -> str:
        """The node whose worker process owns the client end of this connection (else 'pid N' or the port)."""
        if self.server_pid is not None:
            try:
                processes = psutil.Process(self.server_pid).children(recursive=True)
            except psutil.NoSuchProcess:
                processes = []
            for proc in processes:
                try:
                    if any(
                        c.laddr and c.laddr.port == peer_port and c.raddr and c.raddr.port == self.port
                        for c in proc.net_connections(kind="tcp4")
                    ):
                        return self.node_of_pid.get(proc.pid, f"pid {proc.pid}")
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
        return f"127.0.0.1:{peer_port}"

    def totals(self, job: str) -> tuple[Counts, dict[str, Counts]]:
        with self.lock:
            per_client = {
                client: Counts(c.requests, c.downloads, c.bytes) for (j, client), c in self.counts.items() if j == job
            }
        total = Counts(
            sum(c.requests for c in per_client.values()),
            sum(c.downloads for c in per_client.values()),
            sum(c.bytes for c in per_client.values()),
        )
        return total, per_client

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


# ---------------------------------------------------------------------------------------------- jobs
@dataclass
class JobRun:
    name: str
    tasks: int
    seconds: float  #: first add (client clock) -> last endTime (server clock)
    succeeded: int
    failed: int
    nodes_ran: set[str]  #: distinct nodes that ran the job's tasks
    counts: Counts
    per_client: dict[str, Counts]
    prep: list[str]  #: per node: prep state and exit code (job A)
    first_failure: str | None

    @property
    def rate(self) -> float:
        return self.tasks / self.seconds if self.seconds > 0 else float("nan")


def read_check(path: str, size: int) -> str:
    """Read the whole file (through a pipe, so every byte is read) and fail unless its size is `size`."""
    return f'n=$(cat "{path}" | wc -c) && test "$n" -eq {size}'


def add_tasks(client: BatchClient, job_id: str, tasks: list[models.BatchTaskCreateOptions]) -> None:
    for start in range(0, len(tasks), PER_CALL):
        result = client.create_task_collection(
            job_id, models.BatchTaskGroup(task_values=tasks[start : start + PER_CALL])
        )
        bad = [r for r in result.result_values if r.status != "success"]
        if bad:
            raise RuntimeError(f"{len(bad)} tasks not added, first: {bad[0].task_id} {bad[0].status} {bad[0].error}")


def run_job(
    client: BatchClient,
    data: DataServer,
    pool_id: str,
    name: str,
    n: int,
    prep: models.BatchJobPreparationTask | None,
    make_task,
    timeout: float,
    poll: float,
) -> JobRun:
    job_id = unique(f"prep-{name.lower()}")
    client.create_job(
        models.BatchJobCreateOptions(
            id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id), job_preparation_task=prep
        )
    )
    tasks = [make_task(f"t{i:05d}") for i in range(n)]
    began = datetime.now(UTC)
    t0 = time.monotonic()
    add_tasks(client, job_id, tasks)
    wait_task_counts(client, job_id, n, timeout, poll, start=t0)
    listed = list(client.list_tasks(job_id, select=["id", "state", "executionInfo", "nodeInfo"], max_results=1000))
    if len(listed) != n:
        raise RuntimeError(f"job {name}: listed {len(listed)} tasks, expected {n}")
    last_end = max(t.execution_info.end_time for t in listed)
    ok = [t for t in listed if t.execution_info.exit_code == 0 and t.execution_info.failure_info is None]
    bad = [t for t in listed if t not in ok]
    first_failure = None
    if bad:
        info = bad[0].execution_info
        detail = info.failure_info.message if info.failure_info else ""
        first_failure = f"{bad[0].id}: exit {info.exit_code} {detail}".strip()
    nodes_ran = {t.node_info.node_id for t in listed if t.node_info is not None}
    prep_rows = []
    if prep is not None:
        for status in client.list_job_preparation_and_release_task_status(job_id):
            info = status.job_preparation_task_execution_info
            prep_rows.append(
                f"{status.node_id}: {getattr(info.state, 'value', info.state) if info else '-'}, exit "
                f"{info.exit_code if info else '-'}, retries {info.retry_count if info else '-'}"
            )
    client.begin_delete_job(job_id, polling_interval=1).result()
    total, per_client = data.totals(name.lower())
    return JobRun(
        name,
        n,
        (last_end - began).total_seconds(),
        len(ok),
        len(bad),
        nodes_ran,
        total,
        per_client,
        sorted(prep_rows),
        first_failure,
    )


def warm_up(client: BatchClient, pool_id: str, n: int = 2 * NODES * SLOTS) -> dict[int, str]:
    """Node start-up costs out of job A's time; returns worker pid -> node id (each task prints $PPID)."""
    job_id = unique("warm")
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id)))
    add_tasks(
        client, job_id, [models.BatchTaskCreateOptions(id=f"w{i}", command_line=shell("echo $PPID")) for i in range(n)]
    )
    wait_task_counts(client, job_id, n, timeout=120, poll=0.1)
    workers: dict[int, str] = {}
    for task in client.list_tasks(job_id, select=["id", "nodeInfo"]):
        if task.node_info is not None and task.node_info.node_id not in workers.values():
            with contextlib.suppress(ValueError):
                workers[int(read_task_file(client, job_id, task.id, "stdout.txt"))] = task.node_info.node_id
    client.begin_delete_job(job_id, polling_interval=1).result()
    return workers


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=400, help="tasks per job")
    parser.add_argument("--size-mb", type=int, default=50, help="size of the served file, MiB")
    parser.add_argument(
        "--cleanup",
        choices=("auto", "yes", "no"),
        default="auto",
        help="job B's tasks delete their copy after reading it: auto = when the copies would "
        f"take more than {KEEP_SHARE:.0%} of the free disk",
    )
    parser.add_argument("--poll", type=float, default=0.25, help="seconds between task-count polls")
    parser.add_argument("--timeout", type=float, default=1800, help="bound of one job, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (server log, database, node dirs)")
    args = parser.parse_args()

    size = args.size_mb * MB
    tmp = Path(tempfile.mkdtemp(prefix="kiln-bench-prep-"))
    # Non-admin tasks run as accounts of their own (when root), which must pass through the data dir.
    os.chmod(tmp, 0o755)
    os.environ.setdefault("KILN_UID_REGISTRY", str(tmp / "uids"))
    free = shutil.disk_usage(tmp).free
    need_b = args.tasks * size
    cleanup = {"yes": True, "no": False}.get(args.cleanup, need_b > KEEP_SHARE * free)
    print(
        f"disk at {tmp}: {free / 2**30:.1f} GiB free; job B's {args.tasks} copies of {args.size_mb} MiB "
        f"= {need_b / 2**30:.1f} GiB -> "
        + (
            f"its tasks delete their copy after reading (at most {NODES * SLOTS} copies on disk at once)"
            if cleanup
            else "its tasks keep their copies"
        )
    )

    t = time.perf_counter()
    data = DataServer(os.urandom(size)).start()
    server = EmbeddedServer(tmp / "data")
    client: BatchClient | None = None
    runs: list[JobRun] = []
    try:
        server.start()
        data.server_pid = server.process.pid
        client = make_client(server)
        pool_id = create_pool_and_wait(client, nodes=NODES, slots=SLOTS)
        print(
            f"server pid {server.process.pid} at {server.endpoint}; data server at {data.url('<job>')}; "
            f"pool {pool_id} of {NODES} nodes x {SLOTS} slots idle {time.perf_counter() - t:.1f} s after start"
        )
        data.node_of_pid.update(warm_up(client, pool_id))

        prep = models.BatchJobPreparationTask(
            command_line="/bin/true", resource_files=[models.ResourceFile(http_url=data.url("a"), file_path=FILE_NAME)]
        )
        runs.append(
            run_job(
                client,
                data,
                pool_id,
                "A",
                args.tasks,
                prep,
                lambda task_id: models.BatchTaskCreateOptions(
                    id=task_id, command_line=shell(read_check(f"$AZ_BATCH_JOB_PREP_WORKING_DIR/{FILE_NAME}", size))
                ),
                args.timeout,
                args.poll,
            )
        )
        print(f"job A done in {runs[-1].seconds:.1f} s")

        b_script = read_check(FILE_NAME, size) + (f" && rm {FILE_NAME}" if cleanup else "")
        runs.append(
            run_job(
                client,
                data,
                pool_id,
                "B",
                args.tasks,
                None,
                lambda task_id: models.BatchTaskCreateOptions(
                    id=task_id,
                    command_line=shell(b_script),
                    resource_files=[models.ResourceFile(http_url=data.url("b"), file_path=FILE_NAME)],
                ),
                args.timeout,
                args.poll,
            )
        )
        print(f"job B done in {runs[-1].seconds:.1f} s")
    finally:
        if client is not None:
            client.close()
        code = server.stop()
        data.stop()
        print(f"server stopped (exit code {code})")
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(
        f"Kiln job-preparation transfer benchmark: {NODES} nodes x {SLOTS} slots, {args.tasks} tasks per job, "
        f"file {args.size_mb} MiB ({size} bytes), {os.cpu_count()} CPUs, load average now "
        f"{os.getloadavg()[0]:.2f}"
    )
    rows = [("job", "downloads", "requests", "bytes served", "wall time", "tasks/s", "tasks ok/failed", "nodes")]
    for r in runs:
        label = (
            "A (prep task fetches once per node)"
            if r.name == "A"
            else ("B (every task fetches" + (", then deletes its copy)" if cleanup else ")"))
        )
        rows.append(
            (
                label,
                str(r.counts.downloads),
                str(r.counts.requests),
                f"{r.counts.bytes / MB:,.0f} MiB",
                f"{r.seconds:.2f} s",
                f"{r.rate:.1f}",
                f"{r.succeeded}/{r.failed}",
                str(len(r.nodes_ran)),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    for r in runs:
        clients = ", ".join(
            f"{client}: {c.downloads} downloads / {c.requests} requests / {c.bytes / MB:,.0f} MiB"
            for client, c in sorted(r.per_client.items())
        )
        print(f"job {r.name} per client: {clients or 'none'}")
        for row in r.prep:
            print(f"job {r.name} preparation task on {row}")
        if r.first_failure:
            print(f"job {r.name}: {r.failed} tasks failed, first: {r.first_failure}")
    if len(runs) == 2:
        a, b = runs
        bytes_ratio = b.counts.bytes / a.counts.bytes if a.counts.bytes else float("inf")
        print(f"ratio B/A: bytes {bytes_ratio:.1f}x, wall time {b.seconds / a.seconds:.2f}x")
    if runs:
        a = runs[0]
        verdict = "PASS" if a.counts.downloads == len(a.nodes_ran) else "MISS"
        print(
            f"job A: {a.counts.downloads} downloads for {len(a.nodes_ran)} nodes that ran its tasks "
            f"({', '.join(sorted(a.nodes_ran))}): {verdict}"
        )
    if any(r.failed for r in runs):
        print("WARNING: some tasks did not succeed")


if __name__ == "__main__":
    main()
