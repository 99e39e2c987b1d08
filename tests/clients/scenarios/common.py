"""What the Python scenarios share (each runs in its client's own venv, with this directory on its path)."""

import json
import os
import time

ID = os.environ["SCENARIO_ID"]
POOL, JOB = f"{ID}-pool", f"{ID}-job"
ENDPOINT, ACCOUNT, KEY = os.environ["KILN_ENDPOINT"], os.environ["KILN_ACCOUNT_NAME"], os.environ["KILN_ACCOUNT_KEY"]
#: The scenario's commands: a task that writes stdout.txt, three that exit 0, 1 and 2, prep and release.
#: The image every scenario's pool names (Kiln refuses a pool without one, as Azure does)
IMAGE = {"publisher": "canonical", "offer": "0001-com-ubuntu-server-jammy", "sku": "22_04-lts"}
NODE_AGENT = "batch.node.ubuntu 22.04"
SINGLE = "/bin/sh -c 'echo hello from single'"
MANY = {f"many{i}": f"/bin/sh -c 'exit {i}'" for i in range(3)}
PREP, RELEASE = "/bin/sh -c 'echo prep'", "/bin/sh -c 'echo release'"
#: Where the single task uploads its stdout.txt (a container SAS URL the test made in Azurite; none without
#: Azurite), and the blob's name.
OUTPUT_URL, OUTPUT_BLOB = os.environ.get("KILN_OUTPUT_URL"), f"{ID}/stdout.txt"
#: The node counts' filter: the scenario's own pool (others share the server).
COUNTS_FILTER = f"poolId eq '{POOL}'"
#: How scheduling is disabled on the pool's node (its tasks, none here, would finish first).
DISABLE_OPTION = "taskcompletion"
#: A second pool, sized by a constant autoscale formula (to no nodes), and a formula then evaluated on it.
AUTO_POOL, AUTO_FORMULA, EVALUATED_FORMULA = f"{ID}-auto", "$TargetDedicatedNodes=0;", "$TargetDedicatedNodes=1;"


def wait(condition, what, timeout=600):
    """Poll; generous, since a loaded machine starts nodes slowly."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.3)


def report(added, tasks, counts, file_text, status, stats, *, node_counts, images, scheduling, autoscale):
    """The summary the test compares, as the last line of stdout (counts: the client's task counts object;
    stats: the job's statistics' task counts, in the order numSucceededTasks, numFailedTasks, numTaskRetries;
    node_counts: the dedicated node counts objects listed; images: (publisher, offer, sku, nodeAgentSKUId) of
    each supported image; scheduling: the node's schedulingState after disable, then after enable; autoscale:
    the autoscale pool's autoScaleRun results, then those of the formula evaluated on it)."""
    counts = {name: getattr(counts, name) for name in ("succeeded", "failed", "completed")}
    stats = dict(zip(("succeeded", "failed", "retries"), (int(n) for n in stats)))
    summary = {"added": sorted(added), "tasks": tasks, "counts": counts, "file": file_text, "status": status}
    summary["stats"] = stats
    summary["nodeCounts"] = [{"idle": c.idle, "total": c.total} for c in node_counts]
    wanted = tuple(IMAGE[name].lower() for name in ("publisher", "offer", "sku"))
    summary["images"] = sorted(agent for *ref, agent in images if tuple(part.lower() for part in ref) == wanted)
    summary["scheduling"] = scheduling
    summary["autoscale"] = dict(zip(("created", "evaluated"), autoscale))
    print(json.dumps(summary))
