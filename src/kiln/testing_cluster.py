"""An existing Dask cluster made of real processes, for tests and benchmarks of `kiln serve --dask-scheduler`.

`start_cluster(base_dir, hosts=[...])` starts `dask scheduler` and one `kiln worker` per host (or `dask worker
--preload kiln.node`), each with its own node-root directory; every process may run under a prefix command
(e.g. `ip netns exec NS`), the scheduler's and each host's their own. The comms are TLS with files made
here (one self-signed certificate, as Dask's Security.temporary makes), unless tls=False.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiln.cli.embedded import EmbeddedServer, _stop_with_parent


@dataclass(frozen=True)
class HostSpec:
    """One host: its name, the address it serves on, and the command its processes run under."""

    name: str
    ip: str = "127.0.0.1"
    prefix: tuple[str, ...] = ()
    plain_dask: bool = False  #: `dask worker --preload kiln.node` instead of `kiln worker`


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path

    def args(self) -> list[str]:
        return ["--tls-ca-file", str(self.ca), "--tls-cert", str(self.cert), "--tls-key", str(self.key)]


def write_tls_files(directory: Path) -> TlsFiles:
    """A CA that is also every process's certificate (mutual authentication within the cluster)."""
    from distributed.security import Security

    made = Security.temporary()
    files = TlsFiles(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    for path, text in (
        (files.ca, made.tls_ca_file),
        (files.cert, made.tls_client_cert),
        (files.key, made.tls_client_key),
    ):
        path.write_text(str(text))
        os.chmod(path, 0o600)
    return files


@dataclass
class Host:
    spec: HostSpec
    root_dir: Path
    process: subprocess.Popen[bytes] | None = None


@dataclass
class Cluster:
    base_dir: Path
    scheduler_prefix: tuple[str, ...] = ()
    scheduler_ip: str = "127.0.0.1"
    tls: TlsFiles | None = None
    address: str = ""
    scheduler: subprocess.Popen[bytes] | None = None
    hosts: dict[str, Host] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)  #: extra environment of every process, the server's too

    # -- processes ---------------------------------------------------------------------------

    def _spawn(
        self, command: list[str], log_name: str, prefix: Sequence[str], env: dict[str, str] | None = None
    ) -> Any:
        with open(self.base_dir / f"{log_name}.log", "ab") as log:
            return subprocess.Popen(
                [*prefix, *command],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env, **(env or {})},
                start_new_session=True,
                preexec_fn=_stop_with_parent,
            )

    def start_scheduler(self, timeout: float = 60) -> None:
        info = self.base_dir / "scheduler.json"
        info.unlink(missing_ok=True)
        protocol = "tls" if self.tls else "tcp"
        command = [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", self.scheduler_ip]
        command += ["--port", "0", "--protocol", protocol, "--no-dashboard", "--scheduler-file", str(info)]
        command += self.tls.args() if self.tls else []
        self.scheduler = self._spawn(command, "scheduler", self.scheduler_prefix)
        _wait(lambda: info.exists() and info.stat().st_size > 0, timeout, "the scheduler's file", self.scheduler)
        self.address = json.loads(info.read_text())["address"]

    def add_host(self, spec: HostSpec) -> Host:
        root = self.base_dir / "hosts" / spec.name
        root.mkdir(parents=True, exist_ok=True)
        for directory in (self.base_dir / "hosts", root):
            os.chmod(directory, 0o755)  # task accounts pass through to their nodes' roots
        host = self.hosts[spec.name] = Host(spec, root)
        self.start_host(spec.name)
        return host

    def start_host(self, name: str) -> None:
        """(Re)start a host's worker, under its name (a host back under its name gets its nodes back)."""
        host = self.hosts[name]
        spec, tls, insecure = host.spec, self.tls.args() if self.tls else [], [] if self.tls else ["--insecure-dask"]
        if spec.plain_dask:
            command = [sys.executable, "-m", "distributed.cli.dask_worker", self.address, "--preload", "kiln.node"]
            command += ["--nthreads", "1", "--memory-limit", "0", "--no-dashboard", "--name", name, "--host", spec.ip]
            env = {"KILN_NODE_ROOT_DIR": str(host.root_dir), "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False"}
            host.process = self._spawn(command + tls, name, spec.prefix, env)
        else:
            command = [sys.executable, "-m", "kiln.cli.main", "worker", self.address, "--node-root-dir"]
            command += [str(host.root_dir), "--name", name, "--host", spec.ip, *insecure]
            host.process = self._spawn(command + tls, name, spec.prefix)

    def pause_host(self, name: str, paused: bool = True) -> None:
        """SIGSTOP (or SIGCONT) everything of the host: a host that stops answering but is not gone."""
        process = self.hosts[name].process
        assert process is not None, "a started host"
        os.killpg(process.pid, signal.SIGSTOP if paused else signal.SIGCONT)

    def kill_host(self, name: str) -> None:
        """SIGKILL the host's worker and nanny at once, as a machine that dies."""
        process = self.hosts[name].process
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def server_env(self) -> dict[str, str]:
        """The environment of a `kiln serve` attached to this cluster (EmbeddedServer(env=...))."""
        env = {**self.env, "KILN_DASK_SCHEDULER": self.address}
        if self.tls:
            env.update(
                KILN_DASK_TLS_CA_FILE=str(self.tls.ca),
                KILN_DASK_TLS_CERT=str(self.tls.cert),
                KILN_DASK_TLS_KEY=str(self.tls.key),
            )
        return env

    def server(self, data_dir: Path, **kwargs: Any) -> EmbeddedServer:
        """A `kiln serve --dask-scheduler` (not started); --insecure-dask when the cluster is tcp://."""
        env = {**self.server_env(), **kwargs.pop("env", {})}
        return EmbeddedServer(data_dir, env=env, args=() if self.tls else ("--insecure-dask",), **kwargs)

    def wait_attached(self, server: EmbeddedServer, names: Sequence[str], timeout: float = 120) -> None:
        """Until the server has claimed each named host (its log says so), so that new nodes spread over them."""

        def claimed() -> bool:
            text = server.log_path.read_text(errors="replace") if server.log_path.exists() else ""
            return all(f"host {name} at " in text for name in names)

        assert server.process is not None, "a started server"
        _wait(claimed, timeout, f"claim of hosts {', '.join(names)}", server.process)

    def stop(self) -> None:
        for name in self.hosts:
            self.kill_host(name)
        if self.scheduler is not None and self.scheduler.poll() is None:
            os.killpg(self.scheduler.pid, signal.SIGKILL)
            self.scheduler.wait()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_cluster(
    base_dir: Path,
    hosts: Sequence[str | HostSpec] = ("host-a", "host-b"),
    *,
    scheduler_prefix: Sequence[str] = (),
    scheduler_ip: str = "127.0.0.1",
    tls: bool = True,
    env: dict[str, str] | None = None,
) -> Cluster:
    """A scheduler and its hosts, started (the hosts' workers join in their own time)."""
    base_dir.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(base_dir, tuple(scheduler_prefix), scheduler_ip, write_tls_files(base_dir) if tls else None)
    cluster.env.update(env or {})
    try:
        cluster.start_scheduler()
        for spec in hosts:
            cluster.add_host(spec if isinstance(spec, HostSpec) else HostSpec(spec))
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _wait(condition: Any, timeout: float, what: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout} s")
        time.sleep(0.1)
