"""The client matrix's scenario for `az batch` (azure-cli), with the account in AZURE_BATCH_* as a user would
(azcli.py runs each command in this one process)."""

from types import SimpleNamespace

from azcli import CREATE_POOL, WORK, az, json_file
from common import (
    AUTO_FORMULA,
    AUTO_POOL,
    COUNTS_FILTER,
    EVALUATED_FORMULA,
    IMAGE,
    JOB,
    MANY,
    NODE_AGENT,
    OUTPUT_BLOB,
    OUTPUT_URL,
    POOL,
    PREP,
    RELEASE,
    SINGLE,
    report,
    wait,
)

az(*CREATE_POOL, "--id", POOL, "--target-dedicated-nodes", "1")
wait(lambda: [n["state"] for n in az("node", "list", "--pool-id", POOL)] == ["idle"], "an idle node")
node_counts = [SimpleNamespace(**c["dedicated"]) for c in az("pool", "node-counts", "list", "--filter", COUNTS_FILTER)]
images = [
    (*(i["imageReference"][k] for k in ("publisher", "offer", "sku")), i["nodeAgentSkuId"])
    for i in az("pool", "supported-images", "list")
]
(node,) = az("node", "list", "--pool-id", POOL)
node_args = ("--pool-id", POOL, "--node-id", node["id"])
# Without --node-disable-scheduling-option (the default, requeue; no task is running): azure-cli 2.91.0 sends
# that option, from the flag or a --json-file, as an object {"nodeDisableSchedulingOption": {...}}.
az("node", "scheduling", "disable", *node_args)
scheduling = [az("node", "show", *node_args)["schedulingState"]]
wait(lambda: az("node", "show", *node_args)["state"] == "offline", "the node to be offline")
az("node", "scheduling", "enable", *node_args)
scheduling.append(az("node", "show", *node_args)["schedulingState"])
wait(lambda: az("node", "show", *node_args)["state"] == "idle", "the node to be idle again")
# In a JSON file: azure-cli 2.91.0's --auto-scale-formula flag fails in the CLI (it passes enable_auto_scale on
# to the HTTP session: TypeError).
auto_pool = {"id": AUTO_POOL, "vmSize": "standard_d2s_v3", "enableAutoScale": True, "autoScaleFormula": AUTO_FORMULA}
auto_pool["virtualMachineConfiguration"] = {"imageReference": IMAGE, "nodeAgentSKUId": NODE_AGENT}
az("pool", "create", "--json-file", json_file("auto-pool.json", auto_pool))
autoscale = (
    az("pool", "show", "--pool-id", AUTO_POOL)["autoScaleRun"]["results"],
    az("pool", "autoscale", "evaluate", "--pool-id", AUTO_POOL, "--auto-scale-formula", EVALUATED_FORMULA)["results"],
)
az("pool", "delete", "--pool-id", AUTO_POOL, "--yes")
job = {"id": JOB, "poolInfo": {"poolId": POOL}, "jobPreparationTask": {"commandLine": PREP}}
job["jobReleaseTask"] = {"commandLine": RELEASE}
az("job", "create", "--json-file", json_file("job.json", job))
single = {"id": "single", "commandLine": SINGLE}  # in a JSON file: the CLI has no flags for output files
if OUTPUT_URL:
    destination = {"container": {"containerUrl": OUTPUT_URL, "path": OUTPUT_BLOB}}
    upload = {"filePattern": "../stdout.txt", "destination": destination}
    single["outputFiles"] = [upload | {"uploadOptions": {"uploadCondition": "taskcompletion"}}]
az("task", "create", "--job-id", JOB, "--json-file", json_file("single.json", single))
many = [{"id": i, "commandLine": c} for i, c in MANY.items()]
added = az("task", "create", "--job-id", JOB, "--json-file", json_file("tasks.json", many))
wait(lambda: all(t["state"] == "completed" for t in az("task", "list", "--job-id", JOB)), "the tasks")
tasks = {t["id"]: t["executionInfo"]["exitCode"] for t in az("task", "list", "--job-id", JOB)}
counts = SimpleNamespace(**az("job", "task-counts", "show", "--job-id", JOB)["taskCounts"])
job_stats = az("job", "show", "--job-id", JOB, "--expand", "stats")["stats"]
stats = (job_stats["numSucceededTasks"], job_stats["numFailedTasks"], job_stats["numTaskRetries"])
stdout = WORK / "stdout.txt"
az(
    "task",
    "file",
    "download",
    "--job-id",
    JOB,
    "--task-id",
    "single",
    "--file-path",
    "stdout.txt",
    "--destination",
    str(stdout),
)
az("job", "stop", "--job-id", JOB)
wait(lambda: az("job", "show", "--job-id", JOB)["state"] == "completed", "the job to complete")
statuses = lambda: az("job", "prep-release-status", "list", "--job-id", JOB)  # noqa: E731
wait(lambda: all(s.get("jobReleaseTaskExecutionInfo") for s in statuses()), "the release task")
status = [
    {"prep": s["jobPreparationTaskExecutionInfo"]["exitCode"], "release": s["jobReleaseTaskExecutionInfo"]["exitCode"]}
    for s in statuses()
]
az("job", "delete", "--job-id", JOB, "--yes")
az("pool", "delete", "--pool-id", POOL, "--yes")
report(
    [r["status"].lower() for r in added],
    tasks,
    counts,
    stdout.read_text(),
    status,
    stats,
    node_counts=node_counts,
    images=images,
    scheduling=scheduling,
    autoscale=autoscale,
)
