"""Deploying application packages on a node: once per node, whole or not at all, readable by task accounts."""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import stat
import threading
import zipfile

import pytest

from kiln.compute.node.failures import StepFailure
from kiln.compute.node.packages import DONE, deploy, deploy_all, package_dir
from kiln.compute.protocol import AppPackage


def _package(tmp_path, name: str = "app.zip", files: dict[str, int] | None = None) -> AppPackage:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for member, mode in (files or {"bin/run": 0o700, "data.txt": 0o600, "../escape.txt": 0o644}).items():
            info = zipfile.ZipInfo(member)
            info.external_attr = mode << 16
            archive.writestr(info, member)
    path = tmp_path / name
    path.write_bytes(buffer.getvalue())
    return AppPackage("Tool", "1.0", str(path), ("AZ_BATCH_APP_PACKAGE_Tool_1_0",))


def test_a_package_is_extracted_under_applications_with_modes_tasks_can_use(tmp_path):
    root = tmp_path / "node"
    directory = deploy(root, _package(tmp_path))
    assert directory == root / "applications" / "tool_1.0"
    assert stat.S_IMODE((directory / "bin" / "run").stat().st_mode) == 0o755
    assert stat.S_IMODE((directory / "data.txt").stat().st_mode) == 0o644
    assert (directory / DONE).exists()
    assert not (root / "applications" / "escape.txt").exists() and not (root / "escape.txt").exists()


def test_a_deployed_package_is_not_extracted_again(tmp_path):
    root = tmp_path / "node"
    package = _package(tmp_path)
    directory = deploy(root, package)
    (directory / "data.txt").write_text("changed by a task")
    assert deploy(root, package) == directory
    assert (directory / "data.txt").read_text() == "changed by a task"


def test_variables_name_the_directory_and_a_missing_zip_fails_the_step_naming_the_package(tmp_path):
    root = tmp_path / "node"
    package = _package(tmp_path)
    env = asyncio.run(deploy_all(root, (package,)))
    assert env == {"AZ_BATCH_APP_PACKAGE_Tool_1_0": str(root / "applications" / "tool_1.0")}
    gone = AppPackage("Gone", "2", str(tmp_path / "gone.zip"), ("AZ_BATCH_APP_PACKAGE_Gone_2",), pool=True)
    with pytest.raises(StepFailure) as caught:
        asyncio.run(deploy_all(root, (gone,)))
    assert caught.value.info["code"] == "PoolApplicationPackageDeploymentFailed"
    assert caught.value.info["category"] == "usererror"
    assert not any((root / "applications").glob(".extracting-*"))


def test_steps_starting_at_once_share_one_extraction(tmp_path):
    """Two slots of a node start steps naming the same package together: the second waits for the first's
    extraction and uses it; nothing is replaced under a running command (it once failed a cluster e2e run)."""
    root = tmp_path / "node"
    package = _package(tmp_path, files={f"f{i}.txt": 0o644 for i in range(300)})
    start = threading.Barrier(4)

    def one() -> int:
        start.wait()
        return deploy(root, package).stat().st_ino

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        inodes = set(pool.map(lambda _: one(), range(4)))
    assert inodes == {package_dir(root, package).stat().st_ino}
    assert not any((root / "applications").glob(".extracting-*"))
