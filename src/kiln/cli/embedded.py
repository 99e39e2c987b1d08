"""A `kiln serve` subprocess on a free port: for the demo, the end-to-end tests and the benchmarks."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from kiln.api.client_auth import SharedKeyAuth
from kiln.dev_account import DEV_ACCOUNT_KEY, DEV_ACCOUNT_NAME
from kiln.scheduler.control import BROKEN


def _stop_with_parent() -> None:
    """In the child, before exec: SIGTERM when the process that started it dies, so a test run or demo that is
    killed (a pytest timeout, Ctrl-C twice) leaves no server behind to load the machine."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


#: prctl(2)'s option that asks for a signal when the parent dies (Linux).
PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EmbeddedServer:
    """Starts `kiln serve` and waits until it answers; `stop()` sends SIGTERM, `kill()` SIGKILL."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        database_url: str | None = None,
        log_path: Path | None = None,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        host: str = "127.0.0.1",
        prefix: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.database_url = database_url
        self.log_path = log_path or self.data_dir / "server.log"
        self.env = dict(env or {})  #: extra environment for the server (e.g. KILN_MIN_SCHEDULE_INTERVAL)
        self.args = args  #: extra `kiln serve` options (e.g. --insecure-dask)
        self.host = host  #: the address it serves on
        self.prefix = prefix  #: the command it runs under (e.g. `ip netns exec NS`: another host)
        self.process: subprocess.Popen | None = None
        self.account_name, self.account_key = DEV_ACCOUNT_NAME, DEV_ACCOUNT_KEY

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 60) -> EmbeddedServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "kiln.cli.main",
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
        ]
        if self.database_url:
            command += ["--database-url", self.database_url]
        command += self.args
        if self.host != "127.0.0.1":
            command += ["--host", self.host]
        env = {**os.environ, **self.env, "KILN_ACCOUNT_NAME": self.account_name, "KILN_ACCOUNT_KEY": self.account_key}
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [*self.prefix, *command],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_stop_with_parent,
        )
        log.close()
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        auth = SharedKeyAuth(self.account_name, self.account_key)
        assert self.process is not None, "start() sets it"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"kiln serve exited with {self.process.returncode}; see {self.log_path}")
            try:
                response = httpx.get(
                    f"{self.endpoint}/pools", params={"api-version": "2025-06-01"}, auth=auth, timeout=2
                )
                if response.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"kiln serve did not answer within {timeout} s; see {self.log_path}")

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait: a clean shutdown. A server that checked its control state (KILN_CHECK_STATE, as
        the tests run it) and found it broken fails here, so the bug cannot pass unseen."""
        code = self._signal(signal.SIGTERM, timeout)
        self.raise_if_broken()
        return code

    def raise_if_broken(self) -> None:
        if self.log_path.exists() and BROKEN.encode() in (broken := self.log_path.read_bytes()):
            line = next(line for line in broken.splitlines() if BROKEN.encode() in line)
            raise AssertionError(f"{line.decode(errors='replace')} (see {self.log_path})")

    def kill(self) -> int:
        """SIGKILL the server and everything in its process group (its node workers), as a crash would."""
        if self.process is None:
            return 0
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return self.process.wait(timeout=30)

    def _signal(self, sig: int, timeout: float) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return self.kill()

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
