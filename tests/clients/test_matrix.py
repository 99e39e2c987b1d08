"""Batch clients no one here wrote, each unchanged in its own environment, through one scenario: a pool, its
node counts, the supported images, scheduling disabled and enabled on its node, a second pool sized by
autoscale and a formula evaluated on it, a job with preparation and release tasks, a task (its stdout.txt
also uploaded to Azurite as an output file) and a collection, wait, list, task counts, a task file, the
preparation/release status, terminate, delete (scenarios/, one script per client family).

The environments are made on first use and cached (kiln.testing_clients); the scenarios all run at once
against the session's server, each test waiting for its own."""

from __future__ import annotations

import json
import subprocess
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from kiln.testing_azurite import INSTALL_HINT
from kiln.testing_clients import CLIENTS, Client, Outputs, run_scenario

pytestmark = pytest.mark.timeout(1800)  # a cold cache installs azure-cli (~700 MB) first

SCENARIOS = Path(__file__).parent / "scenarios"
#: What every client must have seen.
EXPECTED = {
    "added": ["success", "success", "success"],
    "tasks": {"single": 0, "many0": 0, "many1": 1, "many2": 2},
    "counts": {"succeeded": 2, "failed": 2, "completed": 4},
    "file": "hello from single\n",
    "status": [{"prep": 0, "release": 0}],
    "stats": {"succeeded": 2, "failed": 2, "retries": 0},
    "nodeCounts": [{"idle": 1, "total": 1}],  # the pool's dedicated nodes, once its node is idle
    "images": ["batch.node.ubuntu 22.04"],  # the node agents listed for the pool's image
    "scheduling": ["disabled", "enabled"],  # the node's schedulingState after disable, then after enable
    "autoscale": {  # the autoscale pool's autoScaleRun.results (a constant formula), then an evaluation's
        "created": "$TargetDedicatedNodes=0;$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue",
        "evaluated": "$TargetDedicatedNodes=1;$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue",
    },
}


@dataclass(frozen=True)
class Run:
    """One client's scenario, running in the background under its own id."""

    scenario_id: str
    result: Future[subprocess.CompletedProcess[str]]

    def succeeded(self, client: Client) -> subprocess.CompletedProcess[str]:
        result = self.result.result()
        assert result.returncode == 0, f"{client.name} failed:\n{result.stderr[-4000:]}"
        return result


@pytest.fixture(scope="module")
def runs(server, outputs: Outputs | None) -> dict[str, Run]:
    with ThreadPoolExecutor(len(CLIENTS)) as pool:
        ids = {client.name: f"matrix-{uuid.uuid4().hex[:8]}" for client in CLIENTS}
        yield {
            c.name: Run(ids[c.name], pool.submit(run_scenario, c, server, SCENARIOS / c.scenario, ids[c.name], outputs))
            for c in CLIENTS
        }


@pytest.mark.parametrize("client", CLIENTS, ids=lambda client: client.name)
def test_client_runs_the_scenario(runs, client: Client) -> None:
    result = runs[client.name].succeeded(client)
    assert json.loads(result.stdout.splitlines()[-1]) == EXPECTED


@pytest.mark.parametrize("client", CLIENTS, ids=lambda client: client.name)
def test_client_uploads_output_files(runs, outputs: Outputs | None, client: Client) -> None:
    """The single task's outputFiles entry put its stdout.txt in the container."""
    if outputs is None:
        pytest.skip(f"Azurite is not installed: {INSTALL_HINT}")
    runs[client.name].succeeded(client)
    assert outputs.read(f"{runs[client.name].scenario_id}/stdout.txt") == EXPECTED["file"]
