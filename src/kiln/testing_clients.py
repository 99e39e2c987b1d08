"""The client matrix's environments (tests/clients/): each Batch client in its own venv or npm dir, made on
first use under a cache dir and kept between runs. `python -m kiln.testing_clients [CACHE_DIR]` makes them
all ahead of a run (.ci/run does)."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

    from kiln.cli.embedded import EmbeddedServer

#: Where the environments live unless KILN_CLIENTS_CACHE says otherwise (git-ignored).
DEFAULT_CACHE = Path(__file__).resolve().parents[2] / ".cache" / "clients"
#: Marks an environment whose install finished.
_READY = ".ready"


@dataclass(frozen=True)
class Client:
    """One Batch client at one version, and how to run a scenario with it."""

    name: str  #: the test id, and its environment's directory name (a new version, a new environment)
    kind: str  #: "python" (a venv) or "npm"
    requirement: str  #: what pip or npm installs
    scenario: str  #: the file under tests/clients/scenarios/ it runs


CLIENTS: tuple[Client, ...] = (
    Client("azure-batch-12.0.0", "python", "azure-batch==12.0.0", "track1.py"),
    Client("azure-batch-13.0.0", "python", "azure-batch==13.0.0", "track1.py"),
    Client("azure-batch-14.1.0", "python", "azure-batch==14.1.0", "track1.py"),
    Client("azure-batch-14.2.0", "python", "azure-batch==14.2.0", "track1.py"),
    Client("azure-batch-15.1.0", "python", "azure-batch==15.1.0", "track2.py"),
    Client("npm-azure-batch-10.2.0", "npm", "@azure/batch@10.2.0", "batch.js"),
    Client("azure-cli-2.91.0", "python", "azure-cli==2.91.0", "az.py"),
)


def cache_dir() -> Path:
    return Path(os.environ.get("KILN_CLIENTS_CACHE") or DEFAULT_CACHE)


def environment(client: Client, cache: Path | None = None) -> Path:
    """The client's environment, installed first if the cache does not hold it (one install at a time per
    client, across processes: the xdist workers share the cache)."""
    root = (cache or cache_dir()) / client.name
    if (root / _READY).exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with _locked(root.with_name(root.name + ".lock")):
        if not (root / _READY).exists():
            shutil.rmtree(root, ignore_errors=True)  # an install that was cut short
            started = time.monotonic()
            _install(client, root)
            (root / _READY).write_text(f"installed in {time.monotonic() - started:.1f} s\n")
    return root


def command(client: Client, root: Path) -> list[str]:
    """The interpreter that runs the client's scenario script."""
    return ["node"] if client.kind == "npm" else [str(root / "bin" / "python")]


def environ(client: Client, root: Path) -> dict[str, str]:
    """The scenario's environment: the client's own packages, never the suite's."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "NODE_PATH")}
    if client.kind == "npm":
        env["NODE_PATH"] = str(root / "node_modules")
    else:
        env["PATH"] = f"{root / 'bin'}:{env.get('PATH', '')}"
    return env


@dataclass(frozen=True)
class Outputs:
    """A container in Azurite, with a SAS URL (read, write, create) the scenarios upload to."""

    container: ContainerClient
    sas_url: str

    def read(self, blob: str) -> str:
        return self.container.download_blob(blob).readall().decode()


def run_scenario(
    client: Client,
    server: EmbeddedServer,
    script: Path,
    scenario_id: str,
    outputs: Outputs | None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a scenario script with the client, in its environment, against the server: the account in KILN_ENDPOINT,
    KILN_ACCOUNT_NAME and KILN_ACCOUNT_KEY, the scenario's id in SCENARIO_ID, the container's SAS URL (if any) in
    KILN_OUTPUT_URL, and `env`."""
    root = environment(client)
    variables = environ(client, root) | {
        "KILN_ENDPOINT": server.endpoint,
        "KILN_ACCOUNT_NAME": server.account_name,
        "KILN_ACCOUNT_KEY": server.account_key,
        "SCENARIO_ID": scenario_id,
    }
    if outputs is not None:
        variables["KILN_OUTPUT_URL"] = outputs.sas_url
    argv = [*command(client, root), str(script)]
    return subprocess.run(argv, env=variables | (env or {}), capture_output=True, text=True, timeout=900)


def _install(client: Client, root: Path) -> None:
    if client.kind == "npm":
        root.mkdir(parents=True)
        _run(["npm", "install", "--prefix", str(root), "--no-audit", "--no-fund", "--silent", client.requirement])
        return
    # A venv without pip of its own; the suite's pip installs into it (pip --python).
    _run([sys.executable, "-m", "venv", "--without-pip", str(root)])
    _run(
        [sys.executable, "-m", "pip", "--python", str(root / "bin" / "python")]
        + ["install", "--quiet", "--disable-pip-version-check", client.requirement]
    )


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def main(argv: list[str]) -> None:
    cache = Path(argv[0]) if argv else cache_dir()
    with ThreadPoolExecutor(len(CLIENTS)) as pool:
        for client, root in zip(CLIENTS, pool.map(lambda c: environment(c, cache), CLIENTS), strict=True):
            print(f"{client.name}: {root} ({(root / _READY).read_text().strip()})")


if __name__ == "__main__":
    main(sys.argv[1:])
