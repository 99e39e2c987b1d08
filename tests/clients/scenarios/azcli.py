"""What the `az batch` scenarios share (az.py, az_operations.py): the account in AZURE_BATCH_* as a user sets it,
and each command as a user types it, run in this one process (an `az` process per command would take seconds to
start)."""

import io
import json
import os
import re
import tempfile
from pathlib import Path

from azure.cli.core import get_default_cli
from common import ACCOUNT, ENDPOINT, IMAGE, KEY, NODE_AGENT

WORK = Path(tempfile.mkdtemp(prefix="kiln-az-"))
os.environ.update(
    AZURE_CONFIG_DIR=str(WORK / "config"),
    AZURE_CORE_COLLECT_TELEMETRY="no",
    AZURE_BATCH_ENDPOINT=ENDPOINT,
    AZURE_BATCH_ACCOUNT=ACCOUNT,
    AZURE_BATCH_ACCESS_KEY=KEY,
)
IMAGE_URN = ":".join((IMAGE["publisher"], IMAGE["offer"], IMAGE["sku"]))
#: `az batch pool create` with the scenarios' VM size and image; add --id and the nodes.
CREATE_POOL = (
    "pool",
    "create",
    "--vm-size",
    "standard_d2s_v3",
    "--image",
    IMAGE_URN,
    "--node-agent-sku-id",
    NODE_AGENT,
)


def az(*args):
    """`az batch ARGS --output json`, its output parsed (None when it prints nothing)."""
    out = io.StringIO()
    if get_default_cli().invoke(["batch", *args, "--output", "json"], out_file=out):
        raise SystemExit(f"az batch {' '.join(args)} failed")
    return json.loads(out.getvalue() or "null")


def az_refused(*args):
    """A command the service refuses, as its user sees it: {"code": the Batch error code the CLI prints in
    parentheses ("ERROR: (Code) message"), "status": the HTTP status of the answer}. The CLI turns the SDK's
    HttpResponseError into an error of its own while handling it, so the SDK's (with the status) is its context."""
    cli = get_default_cli()
    if not cli.invoke(["batch", *args, "--output", "json"], out_file=io.StringIO()):
        raise SystemExit(f"az batch {' '.join(args)} succeeded; the service was expected to refuse it")
    error = cli.result.error
    code = re.match(r"\((\w+)\)", str(error))
    return {"code": code and code.group(1), "status": getattr(error.__context__, "status_code", None)}


def json_file(name, content):
    path = WORK / name
    path.write_text(json.dumps(content))
    return str(path)
