"""The `kiln` command groups over the REST API (pool, node, job, task, file, schedule), run in-process with
Click's runner against the session server: what they print, as tables and as JSON, and their exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from kiln.cli.embedded import free_port
from kiln.cli.exit_codes import ExitCode
from kiln.cli.main import app
from kiln.testing import UBUNTU_DOC, shell, unique, wait_for

runner = CliRunner()


@pytest.fixture
def kiln(server):
    """Run `kiln ARGS…` reaching the server through the AZURE_BATCH_* settings `kiln serve` prints."""
    env = {
        "AZURE_BATCH_ENDPOINT": server.endpoint,
        "AZURE_BATCH_ACCOUNT": server.account_name,
        "AZURE_BATCH_ACCESS_KEY": server.account_key,
    }

    def run(*args: str, expect: int = ExitCode.OK) -> Result:
        result = runner.invoke(app, list(args), env=env)
        assert result.exit_code == expect, (args, result.exit_code, result.output, result.exception)
        return result

    return run


def as_json(result: Result):
    return json.loads(result.stdout)


def test_a_job_from_the_command_line_watched_to_the_end_with_its_story_and_files(kiln, pool, cleanup, tmp_path):
    job_id = unique("cli")
    kiln("job", "create", "--id", job_id, "--pool", pool, "--prep", "/bin/echo prepared")
    cleanup(job=job_id)
    assert job_id in {j["id"] for j in as_json(kiln("job", "list", "--json"))}
    assert job_id in kiln("job", "list", "--filter", f"id eq '{job_id}'").stdout
    tasks = tmp_path / "tasks.json"
    tasks.write_text(
        json.dumps(
            [
                {"id": "lines", "commandLine": shell("for i in 1 2 3; do echo line $i; done")},
                {"id": "fails", "commandLine": shell("echo broken >&2; exit 3")},
            ]
        )
    )
    assert as_json(kiln("task", "create", job_id, "--json-file", str(tasks), "--json")) == {"ids": ["lines", "fails"]}

    watched = kiln("job", "watch", job_id, "--interval", "0.2", expect=ExitCode.TASKS_FAILED)
    assert f"job {job_id} active: 2 of 2 tasks completed, 1 succeeded, 1 failed" in watched.stdout

    by_id = {t["id"]: t for t in as_json(kiln("task", "list", job_id, "--json"))}
    assert by_id["lines"]["executionInfo"]["exitCode"] == 0 and by_id["fails"]["executionInfo"]["exitCode"] == 3
    table = kiln("task", "list", job_id, "--filter", "executionInfo/exitCode eq 3").stdout
    fails_row = next(line for line in table.splitlines() if " fails " in line)
    assert "completed" in fails_row and "FailureExitCode" in fails_row and "lines" not in table

    assert kiln("file", "tail", job_id, "lines", "stdout.txt", "-n", "2").stdout == "line 2\nline 3\n"
    assert kiln("file", "get", job_id, "fails", "stderr.txt").stdout == "broken\n"
    names = {f["name"] for f in as_json(kiln("file", "list", job_id, "fails", "--json"))}
    assert {"stdout.txt", "stderr.txt", "wd"} <= names

    story = kiln("task", "story", job_id, "fails").stdout
    assert "fails: completed: exit code 3" in story and "preparing" in story
    shown = as_json(kiln("task", "show", job_id, "fails", "--json"))
    assert (shown["state"], shown["executionInfo"]["exitCode"]) == ("completed", 3)
    assert "FailureExitCode" in kiln("task", "show", job_id, "fails").stdout  # every field, as a table

    # reactivated, it runs again (and fails again): its story has it back to active, caused by the request
    assert as_json(kiln("task", "reactivate", job_id, "fails", "--json")) == {"id": "fails"}
    again = as_json(kiln("task", "story", job_id, "fails", "--json"))["transitions"]
    back = [r for r in again if r["kind"] == "task" and (r["from"], r["to"]) == ("completed", "active")]
    assert len(back) == 1 and f"/jobs/{job_id}/tasks/fails/reactivate" in back[0]["stimulus"]
    kiln("job", "watch", job_id, "--interval", "0.2", expect=ExitCode.TASKS_FAILED)

    kiln("file", "delete", job_id, "fails", "stderr.txt")
    kiln("file", "get", job_id, "fails", "stderr.txt", expect=ExitCode.NOT_FOUND)
    preps = as_json(kiln("job", "prep-status", job_id, "--json"))
    assert preps and all(p["jobPreparationTaskExecutionInfo"]["exitCode"] == 0 for p in preps)
    shown = as_json(kiln("job", "show", job_id, "--json"))
    assert (shown["state"], shown["taskCounts"]["failed"]) == ("active", 1)

    kiln("job", "disable", job_id)
    assert as_json(kiln("job", "show", job_id, "--json"))["state"] == "disabled"
    kiln("job", "enable", job_id)
    kiln("job", "terminate", job_id)  # waits until the job has completed (its release tasks ran)
    assert as_json(kiln("job", "show", job_id, "--json"))["state"] == "completed"
    kiln("job", "delete", job_id)  # waits until it is gone
    kiln("job", "show", job_id, expect=ExitCode.NOT_FOUND)


def test_file_tail_follows_a_running_task_until_it_completes(kiln, pool, cleanup, marks_dir, tmp_path):
    job_id = unique("cli-tail")
    body = tmp_path / "job.json"
    body.write_text(json.dumps({"id": job_id, "poolInfo": {"poolId": pool}, "priority": 7}))
    assert as_json(kiln("job", "create", "--json-file", str(body), "--json")) == {"id": job_id}
    cleanup(job=job_id)
    assert as_json(kiln("job", "show", job_id, "--json"))["priority"] == 7  # the body as given
    go = marks_dir / f"{job_id}-go"
    script = f"echo first; while [ ! -e {go} ]; do sleep 0.05; done; echo second"
    kiln("task", "create", job_id, "--id", "t", "--command", shell(script))
    kiln("task", "create", job_id, "--id", "stuck", "--command", shell(f"touch {marks_dir}/stuck; exec sleep 600"))
    wait_for(lambda: "first" in kiln("file", "get", job_id, "t", "stdout.txt").stdout, what="first line")
    go.touch()  # the task writes its second line while tail -f follows, or before; either way tail prints it
    followed = kiln("file", "tail", job_id, "t", "stdout.txt", "-f", "--interval", "0.1")
    assert followed.stdout == "first\nsecond\n"

    wait_for(lambda: (marks_dir / "stuck").exists(), what="the stuck task running")
    kiln("task", "terminate", job_id, "stuck")
    ended = as_json(kiln("task", "show", job_id, "stuck", "--json"))
    assert (ended["state"], ended["executionInfo"]["failureInfo"]["code"]) == ("completed", "TaskEnded")
    assert as_json(kiln("task", "delete", job_id, "stuck", "--json")) == {"id": "stuck"}
    kiln("task", "show", job_id, "stuck", expect=ExitCode.NOT_FOUND)
    assert [t["id"] for t in as_json(kiln("task", "list", job_id, "--json"))] == ["t"]


def test_pools_and_nodes(kiln, pool, tmp_path: Path):
    pool_id = unique("cli-pool")
    body = tmp_path / "pool.json"
    body.write_text(
        json.dumps(
            {
                "id": pool_id,
                "vmSize": "standard_d2s_v3",
                "virtualMachineConfiguration": UBUNTU_DOC,
                "targetDedicatedNodes": 0,
            }
        )
    )
    kiln("pool", "create", "--json-file", str(body))
    assert as_json(kiln("pool", "show", pool_id, "--json"))["vmSize"] == "standard_d2s_v3"
    assert pool_id in kiln("pool", "list").stdout
    kiln("pool", "create", "--json-file", str(body), expect=ExitCode.CONFLICT)

    # a node of its own: rebooted, reimaged (each waited for), then removed, as `az batch node delete` does
    kiln("pool", "resize", pool_id, "--nodes", "1")
    (node_id,) = [n["id"] for n in as_json(kiln("node", "list", pool_id, "--json"))]
    booted = _idle(kiln, pool_id, node_id)
    kiln("node", "reboot", pool_id, node_id)  # was refused by the SDK before it sent anything (no body)
    rebooted = _idle(kiln, pool_id, node_id)
    assert rebooted["lastBootTime"] > booted["lastBootTime"]
    kiln("node", "reimage", pool_id, node_id, "--node-reimage-option", "terminate")
    assert _idle(kiln, pool_id, node_id)["lastBootTime"] > rebooted["lastBootTime"]
    kiln("node", "delete", pool_id, "tvmps_none", expect=ExitCode.NOT_FOUND)
    removed = kiln("node", "delete", pool_id, node_id, "--node-deallocation-option", "terminate")
    assert f"1 node(s) removed from pool {pool_id}" in removed.stdout
    assert as_json(kiln("node", "list", pool_id, "--json")) == []  # it waited until the pool was steady
    shrunk = as_json(kiln("pool", "show", pool_id, "--json"))
    assert (shrunk["allocationState"], shrunk["targetDedicatedNodes"]) == ("steady", 0)
    kiln("pool", "delete", pool_id)  # waits until the pool is gone
    kiln("pool", "show", pool_id, expect=ExitCode.NOT_FOUND)

    nodes = as_json(kiln("node", "list", pool, "--json"))
    assert len(nodes) == 2
    shown = kiln("node", "show", pool, nodes[0]["id"]).stdout
    assert nodes[0]["id"] in shown and "schedulingState" in shown


def _idle(kiln, pool_id: str, node_id: str) -> dict:
    """The node once it is idle, as `kiln node show --json` prints it."""
    return wait_for(
        lambda: (node := as_json(kiln("node", "show", pool_id, node_id, "--json")))["state"] == "idle" and node,
        what=f"node {node_id} idle",
    )


def test_job_schedules(kiln, pool, tmp_path: Path):
    schedule_id = unique("cli-schedule")
    body = tmp_path / "schedule.json"
    body.write_text(
        json.dumps(
            {
                "id": schedule_id,
                "schedule": {"doNotRunUntil": "2099-01-01T00:00:00Z", "recurrenceInterval": "PT1H"},
                "jobSpecification": {"poolInfo": {"poolId": pool}},
            }
        )
    )
    kiln("schedule", "create", "--json-file", str(body))
    assert schedule_id in kiln("schedule", "list").stdout
    kiln("schedule", "disable", schedule_id)
    assert as_json(kiln("schedule", "show", schedule_id, "--json"))["state"] == "disabled"
    kiln("schedule", "enable", schedule_id)
    kiln("schedule", "terminate", schedule_id)  # waits until it has completed
    assert as_json(kiln("schedule", "show", schedule_id, "--json"))["state"] == "completed"
    kiln("schedule", "delete", schedule_id)
    kiln("schedule", "show", schedule_id, expect=ExitCode.NOT_FOUND)


def test_exit_codes_scripts_can_branch_on(kiln, server, tmp_path: Path):
    missing = kiln("job", "show", unique("none"), expect=ExitCode.NOT_FOUND)
    assert "JobNotFound" in missing.stderr
    wrong_key = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ=="
    kiln("pool", "list", "--key", wrong_key, expect=ExitCode.AUTHENTICATION)
    kiln("pool", "list", "--account", "someone-else", expect=ExitCode.AUTHENTICATION)  # the right key, another account
    # the options win over the environment: each of them is read
    wrong_env = {"AZURE_BATCH_ENDPOINT": "http://127.0.0.1:1", "AZURE_BATCH_ACCOUNT": "nobody"}
    wrong_env["AZURE_BATCH_ACCESS_KEY"] = wrong_key
    given = ["--endpoint", server.endpoint, "--account", server.account_name, "--key", server.account_key]
    assert runner.invoke(app, ["pool", "list", *given], env=wrong_env).exit_code == ExitCode.OK
    kiln("pool", "list", "--endpoint", f"http://127.0.0.1:{free_port()}", expect=ExitCode.UNREACHABLE)
    kiln("pool", "create", expect=ExitCode.USAGE)  # neither --json-file nor --id
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"id": "bad pool!", "vmSize": "standard_d2s_v3"}))
    assert "InvalidPropertyValue" in kiln("pool", "create", "--json-file", str(bad), expect=ExitCode.FAILED).stderr


def test_the_kiln_entry_point_runs_the_groups():
    run = subprocess.run(
        [sys.executable, "-m", "kiln.cli.main", "job", "show", "x", "--endpoint", f"http://127.0.0.1:{free_port()}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == ExitCode.UNREACHABLE and "cannot reach" in run.stderr
