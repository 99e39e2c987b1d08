"""Azurite (Microsoft's Blob storage emulator, from npm) as a test fixture: the Blob endpoint of the storage tests.

`.ci/run` installs it into `.cache/azurite` at the repository's root (`npm install --prefix .cache/azurite azurite`);
`KILN_AZURITE` may name another `azurite-blob` executable, and one on PATH is used last. Without it the storage
tests skip with the command that installs it, or fail when KILN_TEST_REQUIRE_AZURITE=1 (CI).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kiln.testing import wait_for

#: Azurite's well-known development account (the same in every installation).
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
INSTALL_HINT = "npm install --prefix .cache/azurite azurite  (at the repository's root; .ci/run does it)"
REQUIRE_ENV = "KILN_TEST_REQUIRE_AZURITE"
_LISTENING = re.compile(r"listens on (http://\S+)")


def container_sas_url(
    service_url: str, container: str, expiry: timedelta = timedelta(hours=1), **permission: bool
) -> str:
    """What a user's code does: the container's URL with a SAS signed by the emulator's well-known account key."""
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    sas = generate_container_sas(
        ACCOUNT_NAME,
        container,
        account_key=ACCOUNT_KEY,
        permission=ContainerSasPermissions(**permission),
        expiry=datetime.now(UTC) + expiry,
    )
    return f"{service_url.rstrip('/')}/{container}?{sas}"


def find_executable() -> str | None:
    configured = os.environ.get("KILN_AZURITE")
    if configured:
        return configured
    for parent in Path(__file__).resolve().parents:
        local = parent / ".cache" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
        if local.exists():
            return str(local)
    return shutil.which("azurite-blob")


@dataclass(frozen=True, slots=True)
class Azurite:
    """A running Azurite Blob service on loopback."""

    endpoint: str  #: e.g. http://127.0.0.1:41234 (the account URL adds /devstoreaccount1)

    @property
    def account_url(self) -> str:
        return f"{self.endpoint}/{ACCOUNT_NAME}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.account_url};"
        )


def start(executable: str, location: Path, timeout: float = 60.0) -> tuple[subprocess.Popen[bytes], Azurite]:
    """Start Azurite on a free loopback port (port 0: it logs the one it got) with its data in location."""
    log_path = location / "azurite.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                executable,
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                "0",
                "--location",
                str(location / "data"),
                "--skipApiVersionCheck",
                "--disableTelemetry",
                "--loose",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def listening() -> str | None:
        match = _LISTENING.search(log_path.read_text(errors="replace"))
        if match is None and process.poll() is not None:
            raise RuntimeError(f"Azurite exited ({process.returncode}): {log_path.read_text(errors='replace')}")
        return match.group(1) if match else None

    try:
        return process, Azurite(wait_for(listening, timeout, "Azurite to listen"))
    except BaseException:
        stop(process)
        raise


def stop(process: subprocess.Popen[bytes]) -> None:
    """By its PID: SIGTERM, then SIGKILL if it lingers."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """One Azurite per test session, its data in a temporary directory removed afterwards."""
    executable = find_executable()
    if executable is None:
        reason = f"Azurite is not installed: {INSTALL_HINT}"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    location = Path(tempfile.mkdtemp(prefix="kiln-azurite-"))
    process, running = start(executable, location)
    try:
        yield running
    finally:
        stop(process)
        shutil.rmtree(location, ignore_errors=True)
