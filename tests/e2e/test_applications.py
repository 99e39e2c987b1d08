"""Application packages: `kiln app add`, listApplications/getApplication, and packages referenced by tasks and
pools, extracted on the node with their AZ_BATCH_APP_PACKAGE_* variables, all through the SDK."""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from azure.batch import models
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from typer.testing import CliRunner

from kiln.api.client_auth import SharedKeyAuth
from kiln.cli.main import app as kiln_cli
from kiln.testing import (
    UBUNTU,
    create_pool_and_wait,
    node_operation_answers,
    pool_options,
    read_node_file,
    read_task_file,
    restart_node,
    shell,
    unique,
    wait_for,
    wait_tasks_completed,
)


def _zip(files: dict[str, tuple[str, int]]) -> bytes:
    """name → (text, unix mode)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, (text, mode) in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            archive.writestr(info, text)
    return buffer.getvalue()


def _cli_add(server, tmp_path: Path, app_id: str, version: str, data: bytes, *extra: str):
    package = tmp_path / f"{app_id}-{version}.zip"
    package.write_bytes(data)
    auth = ["--endpoint", server.endpoint, "--account", server.account_name, "--key", server.account_key]
    return CliRunner().invoke(kiln_cli, ["app", "add", app_id, version, str(package), *extra, *auth])


@pytest.fixture(scope="module")
def blender(server, tmp_path_factory) -> str:
    """Application Blender-<n>: 2.7 (the default) and 2.8, each with an executable script and a data file."""
    app_id = unique("Blender")
    tmp = tmp_path_factory.mktemp("packages")
    for version, default in (("2.7", True), ("2.8", False)):
        data = _zip({"bin/run.sh": (f"#!/bin/sh\necho blender {version}\n", 0o755), "data.txt": (version, 0o644)})
        result = _cli_add(server, tmp, app_id, version, data, *(["--default"] if default else []))
        assert result.exit_code == 0, result.output
    return app_id


def _ref(app_id: str, version: str | None = None) -> models.BatchApplicationPackageReference:
    return models.BatchApplicationPackageReference(application_id=app_id, version=version)


def test_applications_are_listed_and_read_as_azure_answers(client, blender):
    listed = {a.id: a for a in client.list_applications()}
    assert sorted(listed[blender].versions) == ["2.7", "2.8"]
    app = client.get_application(blender.upper())
    assert (app.id, app.display_name, sorted(app.versions)) == (blender, None, ["2.7", "2.8"])  # none was given
    with pytest.raises(ResourceNotFoundError) as caught:
        client.get_application("no-such-application")
    assert caught.value.error.code == "ApplicationNotFound"


def test_a_task_package_is_extracted_before_the_task_and_named_in_its_environment(client, pool, cleanup, blender):
    job_id = unique("apptask")
    cleanup(job=job_id)
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool)))
    flat = blender.replace("-", "_")
    script = (
        f'echo "$AZ_BATCH_APP_PACKAGE_{flat}_2_8"; echo "$AZ_BATCH_APP_PACKAGE_{flat.lower()}_2_8"; '
        f'"$AZ_BATCH_APP_PACKAGE_{flat}_2_8/bin/run.sh"; cat "$AZ_BATCH_APP_PACKAGE_{flat}_2_8/data.txt"'
    )
    client.create_task(
        job_id,
        models.BatchTaskCreateOptions(
            id="t", command_line=shell(script), application_package_references=[_ref(blender, "2.8")]
        ),
    )
    (task,) = wait_tasks_completed(client, job_id)
    assert task.execution_info.exit_code == 0, read_task_file(client, job_id, "t", "stderr.txt")
    named, alias, ran, data = read_task_file(client, job_id, "t", "stdout.txt").splitlines()
    assert named == alias
    assert named.endswith(f"/applications/{blender.lower()}_2.8")
    assert (ran, data) == ("blender 2.8", "2.8")
    node_id = task.node_info.node_id
    assert read_node_file(client, pool, node_id, f"applications/{blender.lower()}_2.8/data.txt") == "2.8"


def test_an_unknown_package_reference_is_409_and_nothing_is_created(client, pool, cleanup, blender):
    job_id = unique("appbad")
    cleanup(job=job_id)
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool)))
    for reference in (_ref(blender, "9.9"), _ref("no-such-application")):
        with pytest.raises(ResourceExistsError) as caught:
            client.create_task(
                job_id,
                models.BatchTaskCreateOptions(id="t", command_line="true", application_package_references=[reference]),
            )
        assert caught.value.status_code == 409
        assert caught.value.error.code == "InvalidApplicationPackageReferences"
    assert list(client.list_tasks(job_id)) == []
    pool_id = unique("appbadpool")
    with pytest.raises(HttpResponseError) as caught:
        create_pool_and_wait(client, nodes=0, pool_id=pool_id, application_package_references=[_ref(blender, "1")])
    assert caught.value.error.code == "InvalidApplicationPackageReferences"
    with pytest.raises(ResourceNotFoundError):
        client.get_pool(pool_id)


def _run(client, job_id: str, task_id: str, script: str) -> str:
    client.create_task(job_id, models.BatchTaskCreateOptions(id=task_id, command_line=shell(script)))
    task = wait_for(lambda: (t := client.get_task(job_id, task_id)).state == "completed" and t, 60, task_id)
    assert task.execution_info.exit_code == 0, read_task_file(client, job_id, task_id, "stderr.txt")
    return read_task_file(client, job_id, task_id, "stdout.txt")


@pytest.mark.parametrize("restart", ["reboot", "reimage"])
def test_a_pool_package_reaches_its_nodes_tasks_and_a_change_reaches_a_node_at_its_reboot_or_reimage(
    client, cleanup, blender, restart
):
    """A reimage wipes the node's files: the packages it has then are deployed anew, the old one is gone."""
    flat = blender.replace("-", "_")
    # deployed before the start task, which sees it (the usual way to install from a package)
    start = models.BatchStartTask(command_line=shell(f'cat "$AZ_BATCH_APP_PACKAGE_{flat}/data.txt" || true'))
    pool_id = create_pool_and_wait(client, nodes=1, application_package_references=[_ref(blender)], start_task=start)
    cleanup(pool=pool_id)
    (joined,) = client.list_nodes(pool_id)
    assert read_node_file(client, pool_id, joined.id, "startup/stdout.txt") == "2.7"
    job_id = unique("apppool")
    cleanup(job=job_id)
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id)))
    # a reference without a version: the default's, under the short name
    assert _run(client, job_id, "t1", f'"$AZ_BATCH_APP_PACKAGE_{flat}/bin/run.sh"') == "blender 2.7\n"
    client.update_pool(pool_id, models.BatchPoolUpdateOptions(application_package_references=[_ref(blender, "2.8")]))
    assert [(r.application_id, r.version) for r in client.get_pool(pool_id).application_package_references] == [
        (blender, "2.8")
    ]
    # the node keeps what it was given when it joined
    assert _run(client, job_id, "t2", f'echo "${{AZ_BATCH_APP_PACKAGE_{flat}_2_8:-none}}"') == "none\n"
    (node,) = client.list_nodes(pool_id)
    restart_node(client, pool_id, node.id, restart).result()
    wait_for(lambda: client.get_node(pool_id, node.id).state == "idle", 120, f"the {restart}ed node")
    assert _run(client, job_id, "t3", f'"$AZ_BATCH_APP_PACKAGE_{flat}_2_8/bin/run.sh"') == "blender 2.8\n"
    assert read_node_file(client, pool_id, node.id, f"applications/{blender.lower()}_2.8/data.txt") == "2.8"
    old = f"applications/{blender.lower()}_2.7/data.txt"
    if restart == "reboot":  # a reboot keeps the node's files
        assert read_node_file(client, pool_id, node.id, old) == "2.7"
    else:
        with pytest.raises(ResourceNotFoundError):
            read_node_file(client, pool_id, node.id, old)


def test_a_package_that_is_not_a_zip_is_refused(server, tmp_path):
    result = _cli_add(server, tmp_path, unique("broken"), "1", b"not a zip")
    assert result.exit_code == 1
    assert "InvalidApplicationPackage" in result.output


def test_the_upload_endpoint_needs_the_account_key(server):
    url = f"{server.endpoint}/kiln/applications/{unique('x')}/versions/1"
    assert httpx.put(url, content=_zip({"a": ("a", 0o644)})).status_code == 403
    wrong = SharedKeyAuth(server.account_name, "d3Jvbmcta2V5")
    assert httpx.put(url, content=_zip({"a": ("a", 0o644)}), auth=wrong).status_code == 403


def test_a_task_package_that_cannot_be_deployed_fails_the_task_as_a_pre_processing_error(
    client, server, pool, cleanup, tmp_path
):
    app_id = unique("vanishing")
    assert _cli_add(server, tmp_path, app_id, "1", _zip({"a.txt": ("a", 0o644)})).exit_code == 0
    (server.data_dir / "applications" / app_id.lower() / "1.zip").unlink()  # as if lost from the data dir
    job_id = unique("appgone")
    cleanup(job=job_id)
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool)))
    client.create_task(
        job_id,
        models.BatchTaskCreateOptions(id="t", command_line="true", application_package_references=[_ref(app_id, "1")]),
    )
    (task,) = wait_tasks_completed(client, job_id)
    info = task.execution_info
    assert (info.result, info.exit_code) == ("failure", None)
    assert (info.failure_info.category, info.failure_info.code) == ("usererror", "ApplicationPackageDeploymentFailed")
    assert app_id in info.failure_info.message


def test_a_pool_package_that_cannot_be_deployed_makes_the_node_unusable_and_tasks_go_elsewhere(
    client, server, cleanup, tmp_path
):
    """Deployed as the node comes up, not with its first task: the node is `unusable` before any task, with
    an error naming the package; a new node that can deploy it takes the work; a reboot deploys it again."""
    app_id = unique("unready")
    assert _cli_add(server, tmp_path, app_id, "1", _zip({"a.txt": ("a", 0o644)})).exit_code == 0
    stored = server.data_dir / "applications" / app_id.lower() / "1.zip"
    aside = stored.rename(stored.with_suffix(".aside"))  # as if lost from the data dir
    pool_id = unique("unusable")
    cleanup(pool=pool_id)
    client.create_pool(
        pool_options(pool_id, target_dedicated_nodes=1, application_package_references=[_ref(app_id, "1")])
    )
    broken = wait_for(
        lambda: next((n for n in client.list_nodes(pool_id) if n.state == "unusable"), None), 120, "unusable"
    )
    wait_for(lambda: client.get_pool(pool_id).allocation_state == "steady", 60, "the pool steady")
    (error,) = client.get_node(pool_id, broken.id).errors
    assert error.code == "PoolApplicationPackageDeploymentFailed"
    assert app_id in error.message and "reboot" in error.message
    job_id = unique("unusablejob")
    cleanup(job=job_id)
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id)))
    client.create_task(job_id, models.BatchTaskCreateOptions(id="t", command_line="true"))
    aside.rename(stored)
    client.begin_resize_pool(pool_id, models.BatchPoolResizeOptions(target_dedicated_nodes=2), polling_interval=1)
    (task,) = wait_tasks_completed(client, job_id)
    assert task.execution_info.exit_code == 0
    assert task.node_info.node_id != broken.id
    assert client.get_node(pool_id, broken.id).state == "unusable"
    # a reboot or reimage is the remedy; a deallocate or a start is refused
    assert node_operation_answers(client, pool_id, broken.id, "deallocate", "start") == {
        "deallocate": "NodeStateUnusable",
        "start": "NodeStateUnusable",
    }
    restart_node(client, pool_id, broken.id).result()
    wait_for(lambda: client.get_node(pool_id, broken.id).state == "idle", 120, "the rebooted node deploys its package")
    assert not client.get_node(pool_id, broken.id).errors


def test_a_job_schedules_package_references_are_checked_at_create_and_update(client, blender):
    """As a job's: 409 InvalidApplicationPackageReferences naming the property, and nothing stored."""
    later = models.BatchJobScheduleConfiguration(do_not_run_until=datetime.now(UTC) + timedelta(days=1))
    manager = models.BatchJobManagerTask(
        id="m", command_line="true", application_package_references=[_ref(blender, "9")]
    )
    auto_pool = models.BatchAutoPoolSpecification(
        pool_lifetime_option="jobschedule",
        pool=models.BatchPoolSpecification(
            vm_size="standard_d2s_v3",
            virtual_machine_configuration=UBUNTU,
            application_package_references=[_ref("no-such-application")],
        ),
    )
    bad_specs = {
        "jobSpecification.jobManagerTask.applicationPackageReferences[0]": models.BatchJobSpecification(
            pool_info=models.BatchPoolInfo(pool_id="p"), job_manager_task=manager
        ),
        "jobSpecification.poolInfo.autoPoolSpecification.pool.applicationPackageReferences[0]": (
            models.BatchJobSpecification(pool_info=models.BatchPoolInfo(auto_pool_specification=auto_pool))
        ),
    }
    for prop, spec in bad_specs.items():
        schedule_id = unique("appsched")
        with pytest.raises(ResourceExistsError) as caught:
            client.create_job_schedule(
                models.BatchJobScheduleCreateOptions(id=schedule_id, schedule=later, job_specification=spec)
            )
        assert caught.value.error.code == "InvalidApplicationPackageReferences"
        assert any(d.code == "PropertyName" and d.message == prop for d in caught.value.error.details)
        with pytest.raises(ResourceNotFoundError):
            client.get_job_schedule(schedule_id)
    schedule_id = unique("appsched")
    good = models.BatchJobSpecification(pool_info=models.BatchPoolInfo(pool_id="p"), priority=7)
    client.create_job_schedule(
        models.BatchJobScheduleCreateOptions(id=schedule_id, schedule=later, job_specification=good)
    )
    for spec in bad_specs.values():
        with pytest.raises(ResourceExistsError) as caught:
            client.update_job_schedule(schedule_id, models.BatchJobScheduleUpdateOptions(job_specification=spec))
        assert caught.value.error.code == "InvalidApplicationPackageReferences"
    stored = client.get_job_schedule(schedule_id).job_specification
    assert (stored.priority, stored.job_manager_task) == (7, None)
    client.begin_delete_job_schedule(schedule_id, polling_interval=0.5).result()
