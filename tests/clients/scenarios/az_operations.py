"""The `az batch` operations beyond the client matrix's scenario, each driven as a user would (azcli.py), on a pool
of two nodes: its usage metrics, `pool reset` (its properties replaced: metadata and an application package),
node users and remote login (which Kiln refuses), the node's service logs uploaded to a container (when the test
gives one), a node removed, autoscale enabled then disabled, a resize stopped, and the application summaries.

The test adds the application (`kiln app add`, KILN_APPLICATION_ID, version 1.0) first. The last line of stdout
is the summary it checks (test_az_operations.py)."""

import json
import os
from datetime import UTC, datetime, timedelta

from azcli import CREATE_POOL, az, az_refused
from common import OUTPUT_URL, POOL, wait

APPLICATION = os.environ["KILN_APPLICATION_ID"]
#: The autoscale formula enabled on the pool (one node when it is enabled: it grows back to two).
FORMULA = "$TargetDedicatedNodes=2;"
#: The target of the resize that is stopped (two nodes when it is asked).
RESIZE_TARGET = 6

#: A minute before the pool is created: where its usage metrics and its node's log uploaded start.
STARTED = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
pool_args = ("--pool-id", POOL)


def pool():
    return az("pool", "show", *pool_args)


def nodes():
    return az("node", "list", *pool_args)


def steady_with(count):
    """Wait for the pool to be steady with `count` nodes, all idle."""
    wait(
        lambda: pool()["allocationState"] == "steady" and [n["state"] for n in nodes()] == ["idle"] * count,
        f"the pool steady with {count} idle nodes",
    )


az(*CREATE_POOL, "--id", POOL, "--target-dedicated-nodes", "2")
steady_with(2)
removed, kept = sorted(n["id"] for n in nodes())
node_args = (*pool_args, "--node-id", removed)
summary = {"pool": POOL, "removed": removed, "kept": kept}

# Usage metrics since a minute before the pool was created (one or two 30-minute intervals, as the clock falls).
metrics = az("pool", "usage-metrics", "list", "--filter", f"poolId eq '{POOL}'", "--start-time", STARTED)
summary["usageMetrics"] = {
    "pools": sorted({m["poolId"] for m in metrics}),
    "vmSizes": sorted({m["vmSize"] for m in metrics}),
    "coreHoursCounted": sum(m["totalCoreHours"] for m in metrics) > 0,
}

# `pool reset` (still in azure-cli 2.91.0) replaces the pool's metadata and application packages (updateproperties);
# it prints the pool as a GET then answers it.
reset = az(
    "pool",
    "reset",
    *pool_args,
    "--metadata",
    "team=kiln",
    "--application-package-references",
    f"{APPLICATION}#1.0",
)
summary["reset"] = {name: reset[name] for name in ("metadata", "applicationPackageReferences")}

# A Kiln node has no login accounts or remote login of its own: Kiln refuses both (docs/compatibility.md).
summary["remoteLogin"] = az_refused("node", "remote-login-settings", "show", *node_args)
summary["nodeUser"] = az_refused(
    "node", "user", "create", *node_args, "--name", "someone", "--password", "Kiln-p4ssword"
)

if OUTPUT_URL:
    logs = az("node", "service-logs", "upload", *node_args, "--container-url", OUTPUT_URL, "--start-time", STARTED)
    summary["serviceLogs"] = {name: logs[name] for name in ("virtualDirectoryName", "numberOfFilesUploaded")}

# `node delete` removes the node from the pool (removenodes): the pool's target goes down by one.
az("node", "delete", *pool_args, "--node-list", removed)
steady_with(1)
after_delete = pool()
summary["nodeDelete"] = {
    "target": after_delete["targetDedicatedNodes"],
    "current": after_delete["currentDedicatedNodes"],
    "nodes": [n["id"] for n in nodes()],
}

# Autoscale enabled on the fixed pool: evaluated at once, the pool grows back to two nodes (the new one gets the
# application package `pool reset` named); disabled, it keeps its targets and drops the formula.
autoscale_args = ("--auto-scale-formula", FORMULA, "--auto-scale-evaluation-interval", "PT5M")
az("pool", "autoscale", "enable", *pool_args, *autoscale_args)
enabled = pool()
steady_with(2)
az("pool", "autoscale", "disable", *pool_args)
disabled = pool()
summary["autoscale"] = {
    "enabled": {name: enabled[name] for name in ("enableAutoScale", "autoScaleFormula", "autoScaleEvaluationInterval")}
    | {"results": enabled["autoScaleRun"]["results"], "target": enabled["targetDedicatedNodes"]},
    "disabled": {name: disabled.get(name) for name in ("enableAutoScale", "autoScaleFormula", "targetDedicatedNodes")},
}

# `pool resize --abort` stops the resize just asked for (stopresize): the pool goes `stopping`, then `steady` with
# the nodes it has; short of the target, resizeErrors says why. The new nodes deploy the package `pool reset`
# named while they start, which the test made slow to deploy (as cloud nodes take minutes to boot): the abort
# comes while they are starting.
az("pool", "resize", *pool_args, "--target-dedicated-nodes", str(RESIZE_TARGET))
az("pool", "resize", *pool_args, "--abort")
after_abort = pool()["allocationState"]
wait(lambda: pool()["allocationState"] == "steady", "the pool steady after the stopped resize")
stopped = pool()
summary["resizeAbort"] = {
    "afterAbort": after_abort,
    "state": stopped["allocationState"],
    "target": stopped["targetDedicatedNodes"],
    "current": stopped["currentDedicatedNodes"],
    "nodes": len(nodes()),
    "resizeErrors": [e["code"] for e in stopped.get("resizeErrors") or ()],
}

# The application `kiln app add` stored (`show` prints the answer's odata.metadata too, which is left out here).
summary["applications"] = {
    "listed": [a for a in az("application", "summary", "list") if a["id"] == APPLICATION],
    "shown": {
        name: value
        for name, value in az("application", "summary", "show", "--application-id", APPLICATION).items()
        if name != "odata.metadata"
    },
    "unknown": az_refused("application", "summary", "show", "--application-id", f"{APPLICATION}-none"),
}

az("pool", "delete", *pool_args, "--yes")
print(json.dumps(summary))
