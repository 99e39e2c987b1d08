"""The dashboard in a real browser: sign in, then follow a job with preparation and release tasks from its pool's
heat map to a task's file, as a user would click."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from azure.batch import models
from playwright.sync_api import expect

from kiln.testing import pool_options, shell, terminate_job, unique, wait_for, wait_tasks_completed

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_the_dashboard_asks_for_the_account_key_and_keeps_a_strict_http_only_cookie(page, server, artifacts) -> None:
    page.goto("/ui/jobs/some-job")
    expect(page).to_have_url(f"{server.endpoint}/ui/login?next=%2Fui%2Fjobs%2Fsome-job")
    page.fill("input[name=key]", "not-the-key")
    page.click("button[type=submit]")
    expect(page.get_by_role("alert")).to_contain_text("neither the account key nor a dashboard token")
    page.screenshot(path=artifacts / "login-refused.png")
    assert page.context.cookies() == []

    page.fill("input[name=key]", server.account_key)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{server.endpoint}/ui/jobs/some-job")  # back where it was going
    expect(page.get_by_role("alert")).to_contain_text("JobNotFound")
    (cookie,) = page.context.cookies()
    assert (cookie["httpOnly"], cookie["sameSite"]) == (True, "Strict")


def _job_with_prep_and_release(client, pool: str, failing_node: str, gate: Path) -> str:
    """Preparation fails (exit 3) on one node, so the job's tasks all run on the other; `hold` runs until the
    gate file exists, printing a numbered tick to stdout twice a second; t4 writes to stderr and exits 2."""
    job_id = unique("walk")
    prep = shell(f'[ "$AZ_BATCH_NODE_ID" != {failing_node} ] || {{ echo prep broke here >&2; exit 3; }}')
    client.create_job(
        models.BatchJobCreateOptions(
            id=job_id,
            pool_info=models.BatchPoolInfo(pool_id=pool),
            job_preparation_task=models.BatchJobPreparationTask(command_line=prep),
            job_release_task=models.BatchJobReleaseTask(command_line=shell("echo released")),
        )
    )
    ends = {4: "echo err-t4 >&2; exit 2"}
    tasks = [
        models.BatchTaskCreateOptions(id=f"t{i}", command_line=shell(f"echo out-t{i}; {ends.get(i, 'exit 0')}"))
        for i in range(6)
    ]
    hold = shell(f"n=0; while [ ! -e {gate} ]; do n=$((n + 1)); echo tick-$n; sleep 0.5; done; echo held")
    client.create_tasks(job_id, [*tasks, models.BatchTaskCreateOptions(id="hold", command_line=hold)])
    return job_id


def _last_tick(text: str) -> int:
    """The number of the last `tick-N` line of a tail (0 before the first)."""
    return max((int(n) for n in re.findall(r"tick-(\d+)", text)), default=0)


def test_a_job_with_preparation_and_release_from_the_pool_heat_map_to_a_task_file(
    signed_in, client, pool, cleanup, marks_dir, artifacts
) -> None:
    page = signed_in
    nodes = sorted(node.id for node in client.list_nodes(pool))
    failing, good = nodes
    gate = marks_dir / "go"
    job_id = _job_with_prep_and_release(client, pool, failing, gate)
    cleanup(job=job_id)
    wait_for(lambda: client.get_task(job_id, "hold").state == "running", 60, "the hold task running")

    # The heat map: one cell per node, coloured by state, with its slots; the node running `hold` shows it.
    page.goto("/")
    heatmap = page.locator(f".heatmap[data-pool='{pool}']")
    expect(heatmap.locator(".node")).to_have_count(2)
    busy = heatmap.locator(f".node[data-node='{good}']")
    expect(busy).to_have_attribute("data-state", "running")
    expect(busy.locator(".slots i")).to_have_count(2)
    expect(busy.locator(".slots i.used")).to_have_count(1)
    expect(heatmap.locator(f".node[data-node='{failing}']")).to_have_attribute("data-state", "idle")
    job_row = page.locator(f"tr[data-job='{job_id}']")
    expect(job_row).to_contain_text("1 running")
    page.screenshot(path=artifacts / "overview.png", full_page=True)

    # The pool's own page: the same heat map, and a row per node.
    page.locator(f"#pool-{pool} h3").get_by_role("link", name=pool).click()
    expect(page.locator("table.nodes tbody tr")).to_have_count(2)
    expect(page.locator(f".heatmap .node[data-node='{good}']")).to_have_attribute("data-state", "running")
    page.go_back()

    # The job's page: prep/release per node, and the "failed only" switch.
    job_row.get_by_role("link", name=job_id).click()
    expect(page.locator("h1")).to_contain_text(job_id)
    preparations = page.locator("table.preparations tbody tr")
    expect(preparations).to_have_count(2)
    page.click("#failed-only")
    expect(page.locator("#failed-only")).to_have_attribute("aria-checked", "true")
    expect(preparations).to_have_count(1)
    expect(preparations.first).to_have_attribute("data-node", failing)
    expect(preparations.first.locator("td.prep")).to_have_text("completed · failure")
    page.click("#failed-only")
    expect(preparations).to_have_count(2)

    # A running task's page: no failure, and its stdout's tail grows while it runs (the page polls it).
    page.locator("table.tasks").get_by_role("link", name="hold", exact=True).click()
    expect(page.locator("h1")).to_contain_text("running")
    expect(page.locator("#failure-info")).to_have_count(0)
    tail = page.locator("#tail-stdout")
    expect(tail).to_contain_text("tick-")
    first = _last_tick(tail.inner_text())
    wait_for(lambda: _last_tick(tail.inner_text()) > first, 30, "hold's stdout tail to grow on its page")
    page.goto(f"/ui/jobs/{job_id}")

    # Live: the page refreshes itself as `hold` ends (no reload), and its timeline gets every task as a bar.
    gate.touch()
    expect(page.locator(".count.succeeded")).to_have_text("6 succeeded")
    expect(page.locator("svg.timeline rect.bar")).to_have_count(7)
    expect(page.locator("svg.timeline rect.bar.failure")).to_have_count(1)
    page.screenshot(path=artifacts / "job.png", full_page=True)
    if os.environ.get("KILN_UPDATE_SCREENSHOT") == "1":  # the README's picture, refreshed on demand only
        shutil.copy(artifacts / "job.png", DOCS / "dashboard.png")

    # Tasks filtered by state, then by exit code; then t4's page: exit code, story, files and its stdout's tail.
    expect(page.locator("#matching")).to_have_text("7 matching")
    page.select_option("select[name=state]", "succeeded")
    page.click("form.filters button[type=submit]")
    expect(page.locator("#matching")).to_have_text("6 matching")
    expect(page.locator("table.tasks tbody tr")).to_have_count(6)
    page.select_option("select[name=state]", "")
    page.select_option("select[name=exit_code]", "2")
    page.click("form.filters button[type=submit]")
    expect(page.locator("table.tasks tbody tr")).to_have_count(1)
    expect(page.locator("#matching")).to_have_text("1 matching")
    page.get_by_role("link", name="t4", exact=True).click()
    expect(page.locator("#exit-code")).to_have_text("2")
    expect(page.locator("#failure-info")).to_contain_text("FailureExitCode")
    story = page.locator("table.story")
    for step in ("active", "running", "completed"):
        expect(story).to_contain_text(step)
    expect(page.locator("#why")).to_contain_text("completed")
    expect(page.locator("#tail-stdout")).to_contain_text("out-t4")
    expect(page.locator("#tail-stderr")).to_contain_text("err-t4")
    page.screenshot(path=artifacts / "task.png", full_page=True)
    page.locator("table.files").get_by_role("link", name="stdout.txt").click()
    expect(page.locator("#file-text")).to_contain_text("out-t4")

    # The failing node's page: the failure under Errors, and its prep task's stderr through the file browser.
    page.goto(f"/ui/jobs/{job_id}?failed_only=1")
    page.locator("table.preparations").get_by_role("link", name=failing).click()
    expect(page.locator(".banner.failure")).to_contain_text("preparation task failed (exit code 3)")
    for directory in ("workitems/", f"{job_id}/", "job-1/", "jobpreparation/"):
        page.locator("table.files").get_by_role("link", name=directory, exact=True).click()
    page.locator("table.files").get_by_role("link", name="stderr.txt").click()
    expect(page.locator("#file-text")).to_contain_text("prep broke here")
    page.screenshot(path=artifacts / "node-file.png", full_page=True)

    # Release runs when the job ends; the job's page shows it without a reload.
    page.goto(f"/ui/jobs/{job_id}")
    wait_tasks_completed(client, job_id)
    terminate_job(client, job_id)
    release = page.locator(f"table.preparations tr[data-node='{good}'] td.release")
    expect(release).to_have_text("completed · success", timeout=60_000)


def test_a_pool_whose_start_task_fails_shows_a_banner_with_the_tail_of_its_stderr(
    signed_in, server, client, cleanup, artifacts
) -> None:
    """A real start task that fails (exit 3, waitForSuccess): the pool's page and the overview say so, with the
    end of the node's startup/stderr.txt, and link to the node."""
    page = signed_in
    pool_id = unique("startfail")
    broken = shell("echo first line of output >&2; echo start task broke: no license server >&2; exit 3")
    start = models.BatchStartTask(command_line=broken, wait_for_success=True)
    client.create_pool(pool_options(pool_id, target_dedicated_nodes=1, start_task=start))
    cleanup(pool=pool_id)
    node = wait_for(
        lambda: next((n for n in client.list_nodes(pool_id) if n.state == "starttaskfailed"), None),
        120,
        "the node's start task failed",
    )

    page.goto(f"/ui/pools/{pool_id}")
    banner = page.locator(".banner.start-task-failure")
    expect(banner).to_have_count(1)
    expect(banner).to_contain_text(f"Start task failed on {node.id}")
    expect(banner).to_contain_text("with exit code 3")
    expect(banner).to_contain_text("FailureExitCode")
    expect(banner.locator("pre.tail")).to_contain_text("start task broke: no license server")
    expect(page.locator(f".heatmap .node[data-node='{node.id}']")).to_have_attribute("data-state", "starttaskfailed")
    page.screenshot(path=artifacts / "start-task-failure.png", full_page=True)

    page.goto("/")
    overview = page.locator(".banner.start-task-failure", has_text=node.id)
    expect(overview.locator("pre.tail")).to_contain_text("start task broke: no license server")
    overview.get_by_role("link", name=node.id).click()  # to the node's page
    expect(page).to_have_url(f"{server.endpoint}/ui/pools/{pool_id}/nodes/{node.id}")
    page.goto("about:blank")  # its live refresh would find the node gone once cleanup deletes the pool
