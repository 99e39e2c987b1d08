"""Node and pool operations beyond reboot and reimage: task scheduling on a node, deallocate and start,
removing nodes from a pool, stopping a pool's resize; and the node operations a local node cannot honour
(node users, remote login), which answer why."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from kiln.api.context import control
from kiln.api.http import empty, json_response, list_response, metadata_url, parse, read_json, write_conditions
from kiln.commands import node_logs, node_operations
from kiln.errors import Conflict, InvalidPropertyValue, MissingRequiredProperty, NotFound
from kiln.wire.models import UploadBatchServiceLogs
from kiln.wire.times import parse_duration

router = APIRouter()

#: nodeDisableSchedulingOption values; nodeDeallocationOption adds retaineddata (as taskcompletion locally).
SCHEDULING_OPTIONS = ("requeue", "terminate", "taskcompletion")
DEALLOCATION_OPTIONS = (*SCHEDULING_OPTIONS, "retaineddata")
#: At most this many nodes per removenodes call.
MAX_REMOVED = 100


def option(body: dict, name: str, allowed: tuple[str, ...]) -> str:
    value = str(body.get(name) or "requeue").lower()
    if value not in allowed:
        raise InvalidPropertyValue(name, value, f"{name} must be one of: {', '.join(allowed)}.")
    return value


@router.post("/pools/{pool_id}/nodes/{node_id}/disablescheduling")
async def disable_scheduling(request: Request, pool_id: str, node_id: str) -> Response:
    body = await read_json(request, optional=True)
    chosen = option(body, "nodeDisableSchedulingOption", SCHEDULING_OPTIONS)
    await node_operations.set_scheduling(control(request), pool_id, node_id, False, chosen)
    return empty(200, request)


@router.post("/pools/{pool_id}/nodes/{node_id}/enablescheduling")
async def enable_scheduling(request: Request, pool_id: str, node_id: str) -> Response:
    await node_operations.set_scheduling(control(request), pool_id, node_id, True, "requeue")
    return empty(200, request)


@router.post("/pools/{pool_id}/removenodes")
async def remove_nodes(request: Request, pool_id: str) -> Response:
    body = await read_json(request)
    node_ids = body.get("nodeList")
    if node_ids is None:
        raise MissingRequiredProperty("nodeList")
    if not isinstance(node_ids, list) or not node_ids or not all(isinstance(n, str) for n in node_ids):
        raise InvalidPropertyValue("nodeList", None, "nodeList must list the ids of the nodes to remove.")
    if len(node_ids) > MAX_REMOVED:
        raise InvalidPropertyValue("nodeList", None, f"At most {MAX_REMOVED} nodes can be removed in one request.")
    if body.get("resizeTimeout") is not None:
        timeout = body["resizeTimeout"]
        try:
            parse_duration(timeout)
        except Exception:  # isodate raises its own error types
            raise InvalidPropertyValue(
                "resizeTimeout", timeout, "The value is not a valid ISO 8601 duration."
            ) from None
    chosen = option(body, "nodeDeallocationOption", DEALLOCATION_OPTIONS)
    unique = list(dict.fromkeys(node_ids))
    await node_operations.remove_nodes(control(request), pool_id, unique, chosen, write_conditions(request))
    return empty(202, request)


@router.post("/pools/{pool_id}/stopresize")
async def stop_resize(request: Request, pool_id: str) -> Response:
    await node_operations.stop_resize(control(request), pool_id, write_conditions(request))
    return empty(202, request)


@router.post("/pools/{pool_id}/nodes/{node_id}/deallocate")
async def deallocate_node(request: Request, pool_id: str, node_id: str) -> Response:
    body = await read_json(request, optional=True)
    chosen = option(body, "nodeDeallocateOption", DEALLOCATION_OPTIONS)
    await node_operations.deallocate(control(request), pool_id, node_id, chosen)
    return empty(202, request)


@router.post("/pools/{pool_id}/nodes/{node_id}/start")
async def start_node(request: Request, pool_id: str, node_id: str) -> Response:
    await node_operations.start(control(request), pool_id, node_id)
    return empty(202, request)


@router.get("/pools/{pool_id}/nodes/{node_id}/extensions")
async def list_extensions(request: Request, pool_id: str, node_id: str) -> Response:
    """Kiln installs no VM extensions on its nodes: the list is empty."""
    await node_operations.node(control(request), pool_id, node_id)
    return list_response(request, [], "extensions", {})


@router.get("/pools/{pool_id}/nodes/{node_id}/extensions/{name}")
async def get_extension(request: Request, pool_id: str, node_id: str, name: str) -> Response:
    await node_operations.node(control(request), pool_id, node_id)
    raise NotFound(f"The compute node has no extension named {name}: Kiln installs none.", code="ExtensionNotFound")


#: Why a local node has no login accounts or remote login of its own.
NO_LOGIN = (
    "Kiln's compute nodes are local processes, not virtual machines: they have no accounts to log in with and no"
    " remote login. Tasks run as the pool's userAccounts (userIdentity.username) or its auto-users; read a node's"
    " files through the node-files API."
)


@router.post("/pools/{pool_id}/nodes/{node_id}/users")
@router.api_route("/pools/{pool_id}/nodes/{node_id}/users/{name}", methods=["PUT", "DELETE"])
@router.get("/pools/{pool_id}/nodes/{node_id}/remoteloginsettings")
async def no_login(request: Request, pool_id: str, node_id: str, name: str | None = None) -> Response:
    await node_operations.node(control(request), pool_id, node_id)
    raise Conflict(NO_LOGIN, code="OperationNotValidOnNode")


@router.post("/pools/{pool_id}/nodes/{node_id}/uploadbatchservicelogs")
async def upload_batch_service_logs(request: Request, pool_id: str, node_id: str) -> Response:
    body = parse(UploadBatchServiceLogs, await read_json(request))
    if body.identity_reference is not None:
        raise InvalidPropertyValue(
            "identityReference", None, "Kiln has no managed identities: give a containerUrl with a SAS token."
        )
    directory, count = await node_logs.upload(
        control(request), pool_id, node_id, body.container_url, body.start_time, body.end_time
    )
    return json_response(
        {
            "odata.metadata": metadata_url(
                request, "Microsoft.Azure.Batch.Protocol.Entities.UploadBatchServiceLogsResult"
            ),
            "virtualDirectoryName": directory,
            "numberOfFilesUploaded": count,
        }
    )
