"""A 512 MB blob through a task, against Azurite: downloaded as a resource file and uploaded again as an output
file while the resident memory of the server and its node processes is sampled. Both directions stream in
4 MiB requests (compute/node/blob_storage.py), so no process may grow by anything near the blob's size."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
from azure.batch import models
from azure.core.rest import HttpRequest
from azure.storage.blob import BlobServiceClient

from kiln.testing import shell, unique, wait_for
from kiln.testing_azurite import container_sas_url

MB = 1 << 20
SIZE = 512 * MB
#: Far below the blob's size: what a process may grow by while it moves the blob both ways.
GROWTH_BOUND = 150 * MB


class RssSampler:
    """The peak resident memory of a process tree's members, sampled every `interval` seconds in a thread."""

    def __init__(self, root_pid: int, interval: float = 0.05) -> None:
        self.root = psutil.Process(root_pid)
        self.interval = interval
        self.baseline = self.sample()
        self.peak = dict(self.baseline)
        self.samples = 0
        self._stop = threading.Event()

    def sample(self) -> dict[int, int]:
        found = {}
        for proc in [self.root, *self.root.children(recursive=True)]:
            try:
                found[proc.pid] = proc.memory_info().rss
            except psutil.Error:  # ended meanwhile
                continue
        return found

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for pid, rss in self.sample().items():
                self.peak[pid] = max(self.peak.get(pid, 0), rss)
            self.samples += 1

    @contextmanager
    def running(self) -> Iterator[RssSampler]:
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()

    def growth(self) -> dict[int, int]:
        """Per process: its peak over its baseline (a process that started meanwhile: its peak)."""
        return {pid: peak - self.baseline.get(pid, 0) for pid, peak in self.peak.items()}


def sas_url(blobs: BlobServiceClient, name: str, **permission: bool) -> str:
    return container_sas_url(blobs.url, name, **permission)


@pytest.mark.timeout(900)  # ~1.5 GB through Azurite: well under a minute alone, minutes on a loaded machine
def test_a_512_mb_blob_streams_down_and_up_through_a_task_with_flat_memory(
    server, client, pool, azurite, cleanup, open_tmp: Path
):
    blobs = BlobServiceClient.from_connection_string(azurite.connection_string, max_block_size=4 * MB)
    source, target = f"big{uuid.uuid4().hex[:8]}", f"copy{uuid.uuid4().hex[:8]}"
    sparse = open_tmp / "big.bin"
    with open(sparse, "wb") as out:  # 512 MB of zeros that take no disk here
        out.truncate(SIZE)
    with open(sparse, "rb") as data:
        blobs.create_container(source).upload_blob("data/big.bin", data, length=SIZE, max_concurrency=2)
    sparse.unlink()
    blobs.create_container(target)
    try:
        job_id = unique("big")
        client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool)))
        cleanup(job=job_id)
        task = models.BatchTaskCreateOptions(
            id="t",
            command_line=shell(f"test $(stat -c %s data/big.bin) -eq {SIZE}"),
            resource_files=[models.ResourceFile(storage_container_url=sas_url(blobs, source, read=True, list=True))],
            output_files=[
                models.OutputFile(
                    file_pattern="data/big.bin",
                    destination=models.OutputFileDestination(
                        container=models.OutputFileBlobContainerDestination(
                            container_url=sas_url(blobs, target, write=True, create=True), path="copy.bin"
                        )
                    ),
                    upload_options=models.OutputFileUploadConfiguration(upload_condition="tasksuccess"),
                )
            ],
        )
        assert server.process is not None
        with RssSampler(server.process.pid).running() as sampler:
            client.create_task(job_id, task)
            wait_for(lambda: client.get_task(job_id, "t").state == "completed", 600, "the 512 MB task completed")
        info = client.get_task(job_id, "t").execution_info
        assert (info.exit_code, info.failure_info) == (0, None)
        assert blobs.get_blob_client(target, "copy.bin").get_blob_properties().size == SIZE
        moved = client.send_request(HttpRequest("GET", f"/kiln/jobs/{job_id}/transfers")).json()["tasks"]
        assert (moved["downloadedBytes"], moved["uploadedBytes"]) == (SIZE, SIZE)
        assert sampler.samples > 0
        growth = sampler.growth()
        worst = max(growth, key=lambda pid: growth[pid])
        assert growth[worst] < GROWTH_BOUND, f"process {worst} grew by {growth[worst] / MB:.0f} MB"
    finally:
        for name in (source, target):
            blobs.delete_container(name)
