"""Application packages on a node: each (application, version) extracted once under `applications/`, and the
AZ_BATCH_APP_PACKAGE_* variables that name its directory."""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from kiln.compute.node.failures import USER_ERROR, StepFailure
from kiln.compute.protocol import AppPackage

#: Written last into an extracted package's directory: without it, the extraction did not finish.
DONE = ".kiln-extracted"


def package_dir(node_root: Path, package: AppPackage) -> Path:
    return node_root / "applications" / f"{package.app_id}_{package.version}".lower()


def deploy(node_root: Path, package: AppPackage) -> Path:
    """Extract the package unless this node has it already (a later step, a retry); returns its directory.

    Two steps starting at once on a node (two slots) take turns on a lock file, so the second finds the
    first's extraction instead of replacing it under a running command. Extracted beside its final place and
    renamed into it, so a step never sees half a package."""
    target = package_dir(node_root, package)
    if (target / DONE).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / DONE).exists():
            _extract(package, target)
    return target


def _extract(package: AppPackage, target: Path) -> None:
    staging = Path(tempfile.mkdtemp(prefix=".extracting-", dir=target.parent))
    try:
        with zipfile.ZipFile(package.zip_path) as archive:
            for member in archive.infolist():
                extracted = Path(archive.extract(member, staging))  # zipfile strips absolute paths and '..'
                executable = member.is_dir() or (member.external_attr >> 16) & 0o111
                os.chmod(extracted, 0o755 if executable else 0o644)  # every task account reads (and runs) it
        os.chmod(staging, 0o755)
        (staging / DONE).touch()
        if target.exists():  # an unfinished earlier extraction
            shutil.rmtree(target)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


async def deploy_all(node_root: Path, packages: tuple[AppPackage, ...]) -> dict[str, str]:
    """The variables of every package, each deployed first; the first that fails fails the step before it runs."""
    env: dict[str, str] = {}
    for package in packages:
        try:
            directory = await asyncio.to_thread(deploy, node_root, package)
        except (OSError, zipfile.BadZipFile) as exc:
            whose = "the pool's" if package.pool else "the task's"
            raise StepFailure.of(
                USER_ERROR,
                "ApplicationPackageDeploymentFailed" if not package.pool else "PoolApplicationPackageDeploymentFailed",
                f"Could not deploy {whose} application package {package.app_id} version {package.version}: {exc}",
                ApplicationId=package.app_id,
                Version=package.version,
            ) from None
        env.update(dict.fromkeys(package.env_names, str(directory)))
    return env
