"""The `kiln` command: serve prints how to connect; demo runs Azure's prep/release sample end to end."""

from __future__ import annotations

import re
import subprocess
import sys

from kiln.cli.embedded import free_port


def test_serve_prints_endpoint_account_and_key(server):
    log = server.log_path.read_text()
    assert f"Kiln is serving the Azure Batch API at http://127.0.0.1:{server.port}" in log
    assert f"account name: {server.account_name}" in log
    assert f"account key:  {server.account_key}" in log


def test_demo_reproduces_the_prep_and_release_sample():
    run = subprocess.run(
        [sys.executable, "-m", "kiln.cli.main", "demo", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    nodes = re.findall(r"^(tvmps_\w+) tasks:$", out, re.M)
    assert len(nodes) == 2  # each node's file starts with the line its prep task wrote
    assert sorted(re.findall(r"^(task00\d)$", out, re.M)) == [f"task00{i}" for i in range(1, 9)]
    assert out.count("Prep task exit code:    0") == 2
    assert out.count("Release task exit code: 0") == 2
    assert out.count("deleted by the release task") == 2
