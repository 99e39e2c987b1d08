"""`az batch` (azure-cli 2.91.0) through the operations the client matrix's shared scenario leaves out, each
driven as a user would with AZURE_BATCH_ENDPOINT/ACCOUNT/ACCESS_KEY (scenarios/az_operations.py) against the
session's server: pool usage metrics, `pool reset`, node users and remote login (refused, as Kiln documents),
the node's service logs uploaded to a container in Azurite, `node delete`, autoscale enabled and disabled, a
resize stopped with `--abort`, and the application summaries (of a package `kiln app add` stored).

One run of the scenario; each test checks what a user would of one command's outcome."""

from __future__ import annotations

import dataclasses
import io
import json
import uuid
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kiln.cli.main import app as kiln_cli
from kiln.testing_azurite import INSTALL_HINT
from kiln.testing_clients import CLIENTS, Outputs, run_scenario

pytestmark = pytest.mark.timeout(1800)  # a cold cache installs azure-cli (~700 MB) first

SCENARIO = Path(__file__).parent / "scenarios" / "az_operations.py"
AZ = next(client for client in CLIENTS if client.name.startswith("azure-cli-"))
#: The application's package: many small files, so that a node takes a while (seconds on a loaded machine) to
#: deploy it while it is starting, as a cloud node takes minutes to boot: the resize the scenario stops is still
#: under way when its `--abort` comes (the node extracts them one by one: packages.py).
PACKAGE_FILES = 1000
NODE_REFUSED = {"code": "OperationNotValidOnNode", "status": 409}


@dataclasses.dataclass(frozen=True)
class Scenario:
    application: str  #: the application's id
    summary: dict  #: what the scenario saw (the last line of its stdout)


@pytest.fixture(scope="module")
def application(server, tmp_path_factory) -> str:
    """An application with one version, 1.0 (its default), and a display name, added as a user adds one."""
    app_id = f"azops-{uuid.uuid4().hex[:8]}"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for n in range(PACKAGE_FILES):
            archive.writestr(f"data/{n}.txt", str(n))
    package = tmp_path_factory.mktemp("package") / "tool.zip"
    package.write_bytes(buffer.getvalue())
    account = ["--endpoint", server.endpoint, "--account", server.account_name, "--key", server.account_key]
    added = CliRunner().invoke(
        kiln_cli, ["app", "add", app_id, "1.0", str(package), "--default", "--display-name", "A tool", *account]
    )
    assert added.exit_code == 0, added.output
    return app_id


@pytest.fixture(scope="module")
def scenario(server, outputs: Outputs | None, application: str) -> Scenario:
    scenario_id = f"azops-{uuid.uuid4().hex[:8]}"
    result = run_scenario(AZ, server, SCENARIO, scenario_id, outputs, {"KILN_APPLICATION_ID": application})
    assert result.returncode == 0, f"{AZ.name} failed:\n{result.stderr[-4000:]}"
    return Scenario(application, json.loads(result.stdout.splitlines()[-1]))


def test_pool_usage_metrics_list(scenario: Scenario) -> None:
    """The pool's core hours since it was created (two standard_d2s_v3 nodes), in its intervals."""
    summary = scenario.summary
    assert summary["usageMetrics"] == {
        "pools": [summary["pool"]],
        "vmSizes": ["standard_d2s_v3"],
        "coreHoursCounted": True,
    }


def test_pool_reset_replaces_metadata_and_packages(scenario: Scenario) -> None:
    assert scenario.summary["reset"] == {
        "metadata": [{"name": "team", "value": "kiln"}],
        "applicationPackageReferences": [{"applicationId": scenario.application, "version": "1.0"}],
    }


def test_node_user_create_and_remote_login_settings_are_refused(scenario: Scenario) -> None:
    """A Kiln node is a local process with no login accounts: 409 OperationNotValidOnNode (docs/compatibility.md)."""
    assert scenario.summary["nodeUser"] == NODE_REFUSED
    assert scenario.summary["remoteLogin"] == NODE_REFUSED


def test_node_service_logs_upload(server, scenario: Scenario, outputs: Outputs | None) -> None:
    """The answer names the virtual directory of the one file uploaded, and the blob is there: the node's log."""
    if outputs is None:
        pytest.skip(f"Azurite is not installed: {INSTALL_HINT}")
    summary = scenario.summary
    logs = summary["serviceLogs"]
    directory = logs["virtualDirectoryName"]
    assert logs["numberOfFilesUploaded"] == 1
    assert directory.rsplit("/", 1)[0] == f"{server.account_name}/{summary['pool']}/{summary['removed']}"
    blobs = outputs.container.list_blobs(name_starts_with=f"{directory}/")
    assert [blob.name for blob in blobs] == [f"{directory}/kiln-node.log"]
    assert "-> idle" in outputs.read(f"{directory}/kiln-node.log")


def test_node_delete_removes_the_node(scenario: Scenario) -> None:
    summary = scenario.summary
    assert summary["nodeDelete"] == {"target": 1, "current": 1, "nodes": [summary["kept"]]}


def test_pool_autoscale_enable_then_disable(scenario: Scenario) -> None:
    """Enabled: evaluated at once (the pool, at one node, is asked for two); disabled: the formula is dropped and
    the target kept."""
    assert scenario.summary["autoscale"] == {
        "enabled": {
            "enableAutoScale": True,
            "autoScaleFormula": "$TargetDedicatedNodes=2;",
            "autoScaleEvaluationInterval": "PT5M",
            "results": "$TargetDedicatedNodes=2;$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue",
            "target": 2,
        },
        "disabled": {"enableAutoScale": False, "autoScaleFormula": None, "targetDedicatedNodes": 2},
    }


def test_pool_resize_abort_stops_the_resize(scenario: Scenario) -> None:
    """Caught while its new nodes start: `stopping`, then `steady` with the nodes it has. The target keeps the
    value asked for; the four new nodes had all been started (Kiln starts them a hundred at a time), so none is
    missing and resizeErrors is empty (a pool left short gets ResizeStopped: tests/e2e/test_node_operations.py)."""
    assert scenario.summary["resizeAbort"] == {
        "afterAbort": "stopping",
        "state": "steady",
        "target": 6,
        "current": 6,
        "nodes": 6,
        "resizeErrors": [],
    }


def test_application_summary_list_and_show(scenario: Scenario) -> None:
    summary = {"displayName": "A tool", "id": scenario.application, "versions": ["1.0"]}
    assert scenario.summary["applications"] == {
        "listed": [summary],
        "shown": summary,
        "unknown": {"code": "ApplicationNotFound", "status": 404},
    }
