"""compute.usage: a node's processes are found by their working directory, its disk use by its files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from kiln.compute.usage import UsageMeter, tree_size
from kiln.testing import wait_for


def test_a_nodes_processes_and_files_are_measured(tmp_path: Path) -> None:
    node_root, other_root = tmp_path / "node", tmp_path / "other"
    (node_root / "wd").mkdir(parents=True)
    other_root.mkdir()
    (node_root / "wd" / "out.txt").write_bytes(b"x" * 1000)
    (node_root / "stdout.txt").write_bytes(b"y" * 24)
    (node_root / "link").symlink_to(node_root / "wd" / "out.txt")
    task = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], cwd=node_root / "wd", stdin=subprocess.PIPE
    )
    try:
        meter = UsageMeter()
        wait_for(lambda: meter.measure({"n": str(node_root)})["n"]["$MemoryBytes"] > 0, 30, "the task's memory")
        usage = meter.measure({"n": str(node_root), "m": str(other_root)})
        assert usage["n"]["$MemoryBytes"] > 0 and usage["m"]["$MemoryBytes"] == 0
        assert usage["n"]["$DiskBytes"] == 1024 + len(str(node_root / "wd" / "out.txt"))  # the link's own size
        assert usage["n"]["$NetworkInBytes"] == usage["n"]["$NetworkOutBytes"] == 0
        assert task.pid in meter.processes
    finally:
        task.communicate(b"")
    meter.measure({"n": str(node_root)})
    assert task.pid not in meter.processes  # an ended process is forgotten


def test_tree_size_of_a_missing_directory_is_zero(tmp_path: Path) -> None:
    assert tree_size(tmp_path / "gone") == 0
