"""A job's common data in Blob storage, pulled once per node by a job preparation task against every task pulling it
itself: the benchmark's own count of what Blob storage served, beside Kiln's transfer accounting, in one run.

Azurite (kiln.testing_azurite; `npm install --prefix .cache/azurite azurite`) holds two containers with the same
blob set (--files blobs, --size-mb in all), one per job, so each job's traffic is its own. The nodes reach Azurite
through a counting proxy on 127.0.0.1 (a ThreadingHTTPServer in a thread) that counts, per container, the blob
downloads (GET of a blob) and the body bytes it passed on: the benchmark's own figures. Kiln's figures are
`GET /kiln/jobs/{job}/transfers` (docs/transfers.md).

Starts an EmbeddedServer (temp data dir) with a pool of 2 nodes x 4 slots, then, one after the other:

* job A: its jobPreparationTask downloads container A (storageContainerUrl with a read/list SAS, filePath common);
  N tasks each read every file under $AZ_BATCH_JOB_PREP_WORKING_DIR/common in full and fail unless the byte count
  is right. Expected: the blob set is downloaded once per node that ran tasks of A, and the tasks download nothing.
* job B: no preparation task; the same N tasks each download container B as their own resource files and read
  them. With --cleanup (auto: when the copies would take more than a tenth of the free disk) each task deletes its
  copy after reading it.

Tasks are added with create_task_collection, 100 per call. Wall time runs from just before the first add (client
clock) to the latest executionInfo.endTime (server clock, same host). Each job is deleted when it is measured.
Prints both jobs' figures side by side, and PASS/MISS for "job A: Blob storage served the set once per node that
ran its tasks, and Kiln's figures agree"; asserts nothing.

    python bench/prep_transfer.py [--tasks 100] [--size-mb 200] [--files 4] [--cleanup auto|yes|no]
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from azure.batch import BatchClient, models
from azure.core.rest import HttpRequest
from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

from kiln.cli.embedded import EmbeddedServer
from kiln.testing import create_pool_and_wait, make_client, shell, unique, wait_task_counts
from kiln.testing_azurite import ACCOUNT_KEY, ACCOUNT_NAME, INSTALL_HINT, find_executable, start, stop

NODES, SLOTS = 2, 4
PER_CALL = 100
MB = 1 << 20
KEEP_SHARE = 0.10  #: --cleanup auto keeps job B's copies only if they take at most this share of the free disk


# ---------------------------------------------------------------------------------------------- counting proxy
@dataclass
class Served:
    downloads: int = 0  #: blobs fetched: GETs of a blob from its first byte (ranged GETs after it: the same fetch)
    bytes: int = 0  #: response body bytes passed on


@dataclass
class CountingProxy:
    """Passes every request on to Azurite and counts, per container, what it served."""

    upstream: str  #: http://127.0.0.1:PORT
    served: dict[str, Served] = field(default_factory=lambda: defaultdict(Served))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> CountingProxy:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self
        target = urlsplit(self.upstream)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # the connection's end marks the body's: no lengths to rewrite

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=120)
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                self.send_response(response.status, response.reason)
                for name, value in response.getheaders():
                    if name.lower() not in ("connection", "transfer-encoding", "keep-alive"):
                        self.send_header(name, value)
                self.end_headers()
                sent = 0
                while chunk := response.read(MB):
                    self.wfile.write(chunk)
                    sent += len(chunk)
                upstream.close()
                proxy._count(self.command, self.path, sent, self.headers.get("x-ms-range") or self.headers.get("Range"))

            do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = _forward

            def log_message(self, *args: object) -> None:
                return None

        return Handler

    def _count(self, method: str, path: str, sent: int, byte_range: str | None) -> None:
        route, _, query = path.partition("?")
        parts = route.strip("/").split("/", 2)  # account, container, blob
        if len(parts) < 2:
            return
        with self.lock:
            served = self.served[parts[1]]
            served.bytes += sent
            from_start = byte_range is None or byte_range.startswith("bytes=0-")
            if method == "GET" and len(parts) == 3 and "comp=" not in query and from_start:
                served.downloads += 1


# ---------------------------------------------------------------------------------------------- jobs
@dataclass
class JobRun:
    name: str
    tasks: int
    seconds: float  #: first add (client clock) -> last endTime (server clock)
    succeeded: int
    nodes_ran: set[str]
    served: Served  #: the proxy's count for the job's container
    figures: dict  #: Kiln's transfer accounting for the job
    first_failure: str | None


def read_check(directory: str, size: int) -> str:
    """Read every file under `directory` in full and fail unless they add up to `size` bytes."""
    return f'n=$(find "{directory}" -type f -exec cat {{}} + | wc -c) && test "$n" -eq {size}'


def add_tasks(client: BatchClient, job_id: str, tasks: list[models.BatchTaskCreateOptions]) -> None:
    for at in range(0, len(tasks), PER_CALL):
        result = client.create_task_collection(job_id, models.BatchTaskGroup(task_values=tasks[at : at + PER_CALL]))
        bad = [r for r in result.result_values if r.status != "success"]
        if bad:
            raise RuntimeError(f"{len(bad)} tasks not added, first: {bad[0].task_id} {bad[0].status} {bad[0].error}")


def run_job(
    client: BatchClient,
    proxy: CountingProxy,
    pool_id: str,
    name: str,
    container: str,
    tasks: list[models.BatchTaskCreateOptions],
    prep: models.BatchJobPreparationTask | None,
    args: argparse.Namespace,
) -> JobRun:
    job_id = unique(f"prep-{name.lower()}")
    client.create_job(
        models.BatchJobCreateOptions(
            id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id), job_preparation_task=prep
        )
    )
    began = datetime.now(UTC)
    started = time.monotonic()
    add_tasks(client, job_id, tasks)
    wait_task_counts(client, job_id, len(tasks), args.timeout, args.poll, start=started)
    listed = list(client.list_tasks(job_id, select=["id", "executionInfo", "nodeInfo"], max_results=1000))
    ok = [t for t in listed if t.execution_info.exit_code == 0 and t.execution_info.failure_info is None]
    bad = [t for t in listed if t not in ok]
    first_failure = None
    if bad:
        info = bad[0].execution_info
        first_failure = f"{bad[0].id}: exit {info.exit_code} {info.failure_info.message if info.failure_info else ''}"
    response = client.send_request(HttpRequest("GET", f"/kiln/jobs/{job_id}/transfers"))
    response.raise_for_status()
    client.begin_delete_job(job_id, polling_interval=1).result()
    return JobRun(
        name,
        len(tasks),
        (max(t.execution_info.end_time for t in listed) - began).total_seconds(),
        len(ok),
        {t.node_info.node_id for t in listed if t.node_info is not None},
        proxy.served[container],
        response.json(),
        first_failure,
    )


def blob_set(blobs: BlobServiceClient, name: str, files: int, size: int) -> None:
    """`files` blobs of random bytes that add up to `size`, under common/."""
    container = blobs.create_container(name)
    each, rest = divmod(size, files)
    for i in range(files):
        container.upload_blob(f"common/part{i:03d}.bin", os.urandom(each + (rest if i == 0 else 0)))


def sas_url(endpoint: str, name: str) -> str:
    """A read/list SAS for the container, reached through `endpoint` (the SAS signs the path, not the host)."""
    sas = generate_container_sas(
        ACCOUNT_NAME,
        name,
        account_key=ACCOUNT_KEY,
        permission=ContainerSasPermissions(read=True, list=True),
        expiry=datetime.now(UTC) + timedelta(hours=6),
    )
    return f"{endpoint}/{ACCOUNT_NAME}/{name}?{sas}"


# ---------------------------------------------------------------------------------------------- report
def mib(count: int) -> str:
    return f"{count / MB:,.1f} MiB"


def report(runs: list[JobRun], args: argparse.Namespace, size: int, cleanup: bool) -> None:
    print()
    print(
        f"Kiln job-preparation transfer benchmark on Azurite: {NODES} nodes x {SLOTS} slots, {args.tasks} tasks per "
        f"job, blob set of {args.files} blobs, {mib(size)} ({size} bytes); {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.2f}"
    )
    header = ("", "served: downloads", "served: bytes", "Kiln: prep down", "Kiln: tasks down", "Kiln: all down")
    rows = [(*header, "wall time", "tasks ok", "nodes")]
    for r in runs:
        label = "A: prep task, once per node" if r.name == "A" else "B: every task" + (" (deletes)" if cleanup else "")
        f = r.figures
        rows.append(
            (
                label,
                str(r.served.downloads),
                mib(r.served.bytes),
                mib(f["preparation"]["downloadedBytes"]),
                mib(f["tasks"]["downloadedBytes"]),
                mib(f["total"]["downloadedBytes"]),
                f"{r.seconds:.2f} s",
                f"{r.succeeded}/{r.tasks}",
                str(len(r.nodes_ran)),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    for r in runs:
        for node in r.figures["nodes"]:
            print(
                f"job {r.name} node {node['nodeId']}: {node['tasksRun']} tasks, prep downloaded "
                f"{mib(node['preparation']['downloadedBytes'])} in {node['preparation']['downloadSeconds']:.2f} s, "
                f"tasks {mib(node['tasks']['downloadedBytes'])} in {node['tasks']['downloadSeconds']:.2f} s, "
                f"prep saved {mib(node['preparationSavedBytes'])}"
            )
        if r.first_failure:
            print(f"job {r.name}: {r.tasks - r.succeeded} tasks failed, first: {r.first_failure}")
    if len(runs) == 2:
        a, b = runs
        print(
            f"B/A: bytes served {b.served.bytes / max(a.served.bytes, 1):.1f}x, wall time {b.seconds / a.seconds:.2f}x"
        )
        expected = size * len(a.nodes_ran)
        agree = a.figures["total"]["downloadedBytes"] == expected and b.figures["total"]["downloadedBytes"] == (
            size * b.tasks
        )
        once = a.served.downloads == args.files * len(a.nodes_ran)
        print(
            f"job A: {a.served.downloads} blob downloads for {len(a.nodes_ran)} nodes x {args.files} blobs, Kiln "
            f"counts {a.figures['total']['downloadedBytes']} bytes for {expected} expected: "
            f"{'PASS' if once and agree else 'MISS'}"
        )


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100, help="tasks per job")
    parser.add_argument("--size-mb", type=float, default=200, help="size of the blob set, MiB")
    parser.add_argument("--files", type=int, default=4, help="blobs in the set")
    parser.add_argument("--cleanup", choices=("auto", "yes", "no"), default="auto", help="job B deletes its copies")
    parser.add_argument("--poll", type=float, default=0.25, help="seconds between task-count polls")
    parser.add_argument("--timeout", type=float, default=3600, help="bound of one job, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (server log, database, node dirs)")
    args = parser.parse_args()
    executable = find_executable()
    if executable is None:
        raise SystemExit(f"Azurite is not installed: {INSTALL_HINT}")

    size = int(args.size_mb * MB)
    tmp = Path(tempfile.mkdtemp(prefix="kiln-bench-prep-"))
    os.chmod(tmp, 0o755)  # non-admin tasks run as accounts of their own, which must pass through the data dir
    os.environ.setdefault("KILN_UID_REGISTRY", str(tmp / "uids"))
    free = shutil.disk_usage(tmp).free
    cleanup = {"yes": True, "no": False}.get(args.cleanup, args.tasks * size > KEEP_SHARE * free)
    (tmp / "azurite").mkdir()
    azurite_process, azurite = start(executable, tmp / "azurite")
    proxy = CountingProxy(azurite.endpoint).start()
    server = EmbeddedServer(tmp / "data")
    client: BatchClient | None = None
    runs: list[JobRun] = []
    try:
        blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
        for name in ("common-a", "common-b"):
            blob_set(blobs, name, args.files, size)
        server.start()
        client = make_client(server)
        pool_id = create_pool_and_wait(client, nodes=NODES, slots=SLOTS)
        print(f"server at {server.endpoint}, Azurite at {azurite.endpoint} behind {proxy.endpoint}, pool {pool_id}")

        source_a = models.ResourceFile(storage_container_url=sas_url(proxy.endpoint, "common-a"), file_path="data")
        prep = models.BatchJobPreparationTask(command_line="/bin/true", resource_files=[source_a])
        check_a = read_check("$AZ_BATCH_JOB_PREP_WORKING_DIR/data", size)
        tasks_a = [
            models.BatchTaskCreateOptions(id=f"t{i:05d}", command_line=shell(check_a)) for i in range(args.tasks)
        ]
        runs.append(run_job(client, proxy, pool_id, "A", "common-a", tasks_a, prep, args))
        print(f"job A done in {runs[-1].seconds:.1f} s")

        source_b = models.ResourceFile(storage_container_url=sas_url(proxy.endpoint, "common-b"), file_path="data")
        check_b = read_check("data", size) + (" && rm -r data" if cleanup else "")
        tasks_b = [
            models.BatchTaskCreateOptions(id=f"t{i:05d}", command_line=shell(check_b), resource_files=[source_b])
            for i in range(args.tasks)
        ]
        runs.append(run_job(client, proxy, pool_id, "B", "common-b", tasks_b, None, args))
        print(f"job B done in {runs[-1].seconds:.1f} s")
    finally:
        if client is not None:
            client.close()
        print(f"server stopped (exit code {server.stop()})")
        proxy.stop()
        stop(azurite_process)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report(runs, args, size, cleanup)


if __name__ == "__main__":
    main()
