"""GET /metrics after a job: Prometheus' text format with tasks and nodes by state, the dispatch and run
time histograms, store transaction times and HTTP requests by route and status."""

from __future__ import annotations

import httpx
from azure.batch import models
from prometheus_client.parser import text_string_to_metric_families

from kiln.testing import shell, unique, wait_tasks_completed


def scrape(server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = httpx.get(f"{server.endpoint}/metrics", timeout=30)  # scrapers send no Shared Key
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def test_metrics_after_a_job(server, client, pool, cleanup):
    before = scrape(server)
    job_id = unique("metrics")
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool)))
    cleanup(job=job_id)
    tasks = [models.BatchTaskCreateOptions(id=f"t{i}", command_line=shell(f"exit {i % 2}")) for i in range(4)]
    client.create_tasks(job_id, tasks)
    wait_tasks_completed(client, job_id)
    after = scrape(server)

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after[key] - before.get(key, 0)

    assert after[("kiln_tasks", (("state", "completed"),))] >= 4
    assert ("kiln_tasks", (("state", "preparing"),)) in after  # every state is listed, with none at 0
    assert sum(v for (name, labels), v in after.items() if name == "kiln_nodes") >= 2
    assert grew("kiln_task_dispatch_latency_seconds_count") >= 4
    assert grew("kiln_task_run_seconds_count") >= 4
    assert grew("kiln_task_run_seconds_bucket", le="+Inf") >= 4
    assert grew("kiln_store_transaction_seconds_count", kind="write") >= 2
    route = "/jobs/{job_id}/addtaskcollection"
    assert grew("kiln_http_requests_total", method="POST", route=route, status="200") == 1
    assert grew("kiln_http_requests_total", method="POST", route="/jobs", status="201") == 1
