"""`kiln serve` cannot quietly fail: a data dir its task accounts cannot reach is refused, with the command
that fixes it; a server that starts prints what to paste to reach it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from azure.batch import models
from typer.testing import CliRunner

from kiln.cli.embedded import EmbeddedServer, free_port
from kiln.cli.exit_codes import ExitCode
from kiln.cli.main import app
from kiln.testing import create_pool_and_wait, make_client, unique, wait_tasks_completed


@pytest.mark.root("only root runs tasks as accounts of their own")
def test_serve_refuses_a_data_dir_task_accounts_cannot_reach_and_says_what_to_run(open_tmp: Path) -> None:
    closed = open_tmp / "closed"
    closed.mkdir(mode=0o700)
    data = closed / "data"
    command = [sys.executable, "-m", "kiln.cli.main", "serve", "--port", str(free_port()), "--data-dir", str(data)]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert refused.returncode == ExitCode.USAGE, refused.stdout + refused.stderr
    assert "refusing to start" in refused.stderr and "TaskAccountSetupFailed" in refused.stderr
    fix = re.search(r"^\s+(chmod o\+x .+)$", refused.stderr, re.M)
    assert fix is not None and str(closed) in fix.group(1), refused.stderr
    assert not (data / "kiln.db").exists()  # nothing was served

    subprocess.run(fix.group(1), shell=True, check=True)  # what the message says to run
    with EmbeddedServer(data) as server:
        client = make_client(server)
        pool_id = create_pool_and_wait(client, nodes=1)
        job_id = unique("job")
        client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id)))
        client.create_task(job_id, models.BatchTaskCreateOptions(id="t", command_line="/bin/true"))
        [task] = wait_tasks_completed(client, job_id)
        assert task.execution_info.exit_code == 0, task.execution_info.failure_info  # a non-admin task ran


def test_serve_prints_settings_to_paste(server) -> None:
    log = server.log_path.read_text()
    assert f"export AZURE_BATCH_ENDPOINT={server.endpoint}" in log
    assert f"export AZURE_BATCH_ACCOUNT={server.account_name}" in log
    assert f"export AZURE_BATCH_ACCESS_KEY={server.account_key}" in log
    assert "AzureNamedKeyCredential(" in log


def test_serve_prints_how_to_sign_in_to_the_dashboard_and_the_token_signs_in(server) -> None:
    printed = re.search(r"^Dashboard: (\S+)\n\s+sign in with the login token (\S+)", server.log_path.read_text(), re.M)
    assert printed is not None and printed.group(1) == f"{server.endpoint}/"
    url, token = printed.groups()
    assert token != server.account_key
    env = {"KILN_ENDPOINT": server.endpoint, "KILN_ACCOUNT_NAME": server.account_name}
    shown = CliRunner().invoke(app, ["dashboard", "--json"], env={**env, "KILN_ACCOUNT_KEY": server.account_key})
    assert json.loads(shown.stdout) == {"url": url, "loginToken": token}  # `kiln dashboard` prints the same
    with httpx.Client(follow_redirects=False, timeout=30) as browser:
        assert browser.get(url).status_code == 303  # to the sign-in form
        signed_in = browser.post(f"{server.endpoint}/ui/login", data={"key": token, "next": "/"})
        assert signed_in.status_code == 303 and "set-cookie" in signed_in.headers
        page = browser.get(url)
    assert page.status_code == 200 and "Sign out" in page.text
