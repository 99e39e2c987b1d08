"""/pools/{pool}/nodes: list and get compute nodes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from kiln.api import odata, render, selection
from kiln.api.context import control
from kiln.api.http import (
    base_url,
    empty,
    json_response,
    metadata_url,
    read_json,
    seek_filter,
    seek_response,
    seek_window,
)
from kiln.commands import nodes
from kiln.errors import InvalidPropertyValue

router = APIRouter()


@router.get("/pools/{pool_id}/nodes")
async def list_nodes(request: Request, pool_id: str) -> Response:
    base = base_url(request)

    def doc(found: tuple[dict, dict, tuple[int, int], list]) -> dict:
        pool, node, running, recent = found
        return render.node(node, pool, base, *running, recent)

    term, matches = seek_filter(request, odata.NODE_FILTERS, doc)
    after, count = seek_window(request, "")
    page = await nodes.list_page(control(request), pool_id, term, matches, after, count)
    return seek_response(request, page, "nodes", doc)


@router.get("/pools/{pool_id}/nodes/{node_id}")
async def get_node(request: Request, pool_id: str, node_id: str) -> Response:
    pool, node, running, recent = await nodes.get(control(request), pool_id, node_id)
    doc = render.node(node, pool, base_url(request), *running, recent)
    body = {
        "odata.metadata": metadata_url(request, "nodes/@Element"),
        **odata.apply_select(doc, selection.checked_select(request, "nodes/@Element")),
    }
    return json_response(body)


_OPTIONS = ("requeue", "terminate", "taskcompletion", "retaineddata")


async def _restart(request: Request, pool_id: str, node_id: str, field: str, reimage: bool) -> Response:
    body = await read_json(request, optional=True)
    option = str(body.get(field) or "requeue").lower()
    if option not in _OPTIONS:
        raise InvalidPropertyValue(field, option, f"{field} must be one of: {', '.join(_OPTIONS)}.")
    await nodes.restart(control(request), pool_id, node_id, option, reimage=reimage)
    return empty(202, request)


@router.post("/pools/{pool_id}/nodes/{node_id}/reboot")
async def reboot_node(request: Request, pool_id: str, node_id: str) -> Response:
    return await _restart(request, pool_id, node_id, "nodeRebootOption", reimage=False)


@router.post("/pools/{pool_id}/nodes/{node_id}/reimage")
async def reimage_node(request: Request, pool_id: str, node_id: str) -> Response:
    return await _restart(request, pool_id, node_id, "nodeReimageOption", reimage=True)
