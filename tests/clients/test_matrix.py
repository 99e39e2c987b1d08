"""Batch clients no one here wrote, each unchanged in its own environment, through one scenario: a pool, its
node counts, the supported images, scheduling disabled and enabled on its node, a second pool sized by
autoscale and a formula evaluated on it, a job with preparation and
release tasks, a task and a collection, wait, list, task counts, a task file, the preparation/release status,
terminate, delete (scenarios/, one script per client family).

The environments are made on first use and cached (kiln.testing_clients); the scenarios all run at once
against the session's server, each test waiting for its own."""

from __future__ import annotations

import json
import subprocess
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from kiln import testing_clients
from kiln.testing_clients import CLIENTS, Client

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


def _run(client: Client, server) -> subprocess.CompletedProcess[str]:
    root = testing_clients.environment(client)
    env = testing_clients.environ(client, root) | {
        "KILN_ENDPOINT": server.endpoint,
        "KILN_ACCOUNT_NAME": server.account_name,
        "KILN_ACCOUNT_KEY": server.account_key,
        "SCENARIO_ID": f"matrix-{uuid.uuid4().hex[:8]}",
    }
    argv = [*testing_clients.command(client, root), str(SCENARIOS / client.scenario)]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def runs(server) -> dict[str, Future[subprocess.CompletedProcess[str]]]:
    with ThreadPoolExecutor(len(CLIENTS)) as pool:
        yield {client.name: pool.submit(_run, client, server) for client in CLIENTS}


@pytest.mark.parametrize("client", CLIENTS, ids=lambda client: client.name)
def test_client_runs_the_scenario(runs, client: Client) -> None:
    result = runs[client.name].result()
    assert result.returncode == 0, f"{client.name} failed:\n{result.stderr[-4000:]}"
    assert json.loads(result.stdout.splitlines()[-1]) == EXPECTED
