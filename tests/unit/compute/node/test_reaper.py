from __future__ import annotations

import subprocess
from pathlib import Path

from kiln.compute.node import reaper

from ..helpers import alive, eventually


async def test_kills_only_the_processes_of_its_node_root(tmp_path: Path) -> None:
    mine, other = tmp_path / "node-a", tmp_path / "node-ab"
    procs = [subprocess.Popen(["sleep", "300"], env={"AZ_BATCH_NODE_ROOT_DIR": str(root)},
                              start_new_session=True) for root in (mine, other)]
    try:
        assert reaper.node_processes(mine) == [procs[0].pid]
        assert reaper.kill_node_processes(mine) == [procs[0].pid]
        procs[0].wait(10)
        assert alive(procs[1].pid)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)
    await eventually(lambda: not reaper.node_processes(other), what="cleanup")

