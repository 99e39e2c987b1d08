"""No task reaches Kiln's own channels: a non-admin task tries every socket Kiln's processes hold.

The embedded Dask scheduler, the nannies and the node workers run as root; anyone who can speak Dask to
them runs Python as root. A task runs as another uid on the same host and can read /proc/net/tcp, so
each of those channels must refuse whoever lacks Kiln's per-start credentials; the launchers' sockets
must be out of a task's reach altogether.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from azure.batch import BatchClient, models

from kiln.cli.embedded import EmbeddedServer
from kiln.testing import create_pool_and_wait, make_client, read_task_file, unique, wait_tasks_completed

pytestmark = pytest.mark.root("tasks run as accounts of their own only under root")

PROBE = Path(__file__).with_name("socket_probe.py")
#: What the probe imports; their packages are what a hostile task would bring along.
PROBE_IMPORTS = "import distributed, distributed.security, cryptography.x509"


@pytest.fixture(scope="module")
def sockets_base(open_base: Path) -> Path:
    """This file's own server's directory, in the run's (task accounts pass through it; the run's uid registry)."""
    path = Path(tempfile.mkdtemp(prefix="sockets-", dir=open_base))
    os.chmod(path, 0o755)  # mkdtemp makes it 0700
    return path


@pytest.fixture(scope="module")
def sockets_server(sockets_base: Path) -> Iterator[EmbeddedServer]:
    with EmbeddedServer(sockets_base / "kiln") as running:
        yield running


@pytest.fixture(scope="module")
def sockets_client(sockets_server: EmbeddedServer) -> BatchClient:
    return make_client(sockets_server)


@pytest.fixture(scope="module")
def task_python(sockets_base: Path) -> tuple[str, Path]:
    """An interpreter a task account may run and, beside it, Dask and its dependencies in a directory the
    task can read (this test's interpreter may be in a directory it cannot enter): what an attacker's
    resource files would bring. Hard links, so it is quick."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    python = shutil.which(version, path="/usr/local/bin:/usr/bin:/bin")
    if python is None:
        pytest.skip(f"no {version} outside this test's environment for a task account to run")
    site = sockets_base / "site"
    for source in _imported_from_site_packages():
        target = site / source.name
        if source.is_dir():
            shutil.copytree(source, target, copy_function=os.link)
        else:
            site.mkdir(exist_ok=True)
            os.link(source, target)
    return python, site


def _imported_from_site_packages() -> list[Path]:
    """The top-level packages (and distribution metadata) that importing the probe's modules loads."""
    listing = (
        f"{PROBE_IMPORTS}; import sys, sysconfig; site = sysconfig.get_paths()['purelib'] + '/'; "
        "print('\\n'.join({f.removeprefix(site).split('/')[0] for m in list(sys.modules.values()) "
        "if (f := getattr(m, '__file__', None) or '').startswith(site)}))"
    )
    names = subprocess.run([sys.executable, "-c", listing], capture_output=True, text=True, check=True).stdout.split()
    site_packages = Path(psutil.__file__).parent.parent
    return [site_packages / name for name in names] + list(site_packages.glob("*.dist-info"))


def _listening_ports(server: EmbeddedServer) -> list[int]:
    """Every TCP port the server's process tree listens on (its API, the scheduler, nannies, workers)."""
    assert server.process is not None
    root = psutil.Process(server.process.pid)
    ports = set()
    for process in [root, *root.children(recursive=True)]:
        try:
            ports |= {c.laddr.port for c in process.net_connections("inet") if c.status == psutil.CONN_LISTEN}
        except psutil.NoSuchProcess:  # a command that just ended
            continue
    return sorted(ports)


def test_a_non_admin_task_runs_nothing_through_kiln_sockets(
    sockets_base: Path, sockets_server: EmbeddedServer, sockets_client: BatchClient, task_python: tuple[str, Path]
) -> None:
    python, site = task_python
    client = sockets_client
    pool_id = create_pool_and_wait(client, nodes=2, slots=1)
    job_id = unique("probe")
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id)))
    marks = sockets_base / "marks"
    marks.mkdir()
    os.chmod(marks, 0o1777)
    marker = marks / "ran-as"
    probe = shutil.copy(PROBE, sockets_base / PROBE.name)
    ports = _listening_ports(sockets_server)
    assert len(ports) >= 6, ports  # the API, the scheduler, and a nanny and a worker per node
    roots = [str(sockets_server.data_dir), tempfile.gettempdir()]
    command = f"{python} {probe} {site} {json.dumps(ports).replace(' ', '')} {marker} {' '.join(roots)}"
    client.create_task(job_id, models.BatchTaskCreateOptions(id="probe", command_line=command))
    (task,) = wait_tasks_completed(client, job_id, timeout=180)

    stderr = read_task_file(client, job_id, "probe", "stderr.txt")
    assert task.execution_info.exit_code == 0, stderr
    report = json.loads(read_task_file(client, job_id, "probe", "stdout.txt"))
    print(json.dumps(report, indent=1))
    assert not marker.exists(), f"code ran in Kiln's processes as uids {marker.read_text().split()}"
    assert report["uid"] != 0
    assert report["found"] == ports  # the task sees every port Kiln listens on…
    assert report["succeeded"] == {}  # …and none of them talks to it
    served = {get: status for get, status in report["http"].items() if status == 200}
    assert all(get.startswith(f"http {sockets_server.port}/") for get in served), served  # only the Batch API
    assert report["inherited"] == []
