"""/pools: create, read, list, update, resize, delete."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from kiln.api import node_operations, odata, render, statistics
from kiln.api.context import control
from kiln.api.http import (
    base_url,
    empty,
    entity_response,
    read_model,
    seek_filter,
    seek_response,
    seek_window,
    write_conditions,
)
from kiln.commands import pools
from kiln.wire.models import PoolAdd, PoolResize

router = APIRouter()


@router.post("/pools")
async def add_pool(request: Request) -> Response:
    spec = await read_model(request, PoolAdd)
    spec.check()
    row = await pools.add(control(request), spec)
    return empty(201, request, row, location=f"{base_url(request)}/pools/{spec.id}")


@router.get("/pools")
async def list_pools(request: Request) -> Response:
    base = base_url(request)
    term, matches = seek_filter(request, odata.POOL_FILTERS, lambda pair: render.pool(pair[0], base, pair[1]))
    after, count = seek_window(request, "")
    page = await pools.list_page(control(request), term, matches, after, count)
    counts = {row["key"]: count for row, count in page.rows}
    shown = await statistics.pools(
        request, [row for row, _ in page.rows], lambda r: render.pool(r, base, counts[r["key"]])
    )
    return seek_response(request, page, "pools", lambda pair: shown(pair[0]))


@router.get("/pools/{pool_id}")
async def get_pool(request: Request, pool_id: str) -> Response:
    row, count = await pools.get(control(request), pool_id)
    shown = await statistics.pools(request, [row], lambda r: render.pool(r, base_url(request), count))
    return entity_response(request, shown(row), row, "pools/@Element")


@router.head("/pools/{pool_id}")
async def pool_exists(request: Request, pool_id: str) -> Response:
    row, _ = await pools.get(control(request), pool_id)
    return empty(200, request, row)


@router.delete("/pools/{pool_id}")
async def delete_pool(request: Request, pool_id: str) -> Response:
    await pools.delete(control(request), pool_id, write_conditions(request))
    return empty(202, request)


@router.post("/pools/{pool_id}/resize")
async def resize_pool(request: Request, pool_id: str) -> Response:
    resize = await read_model(request, PoolResize)
    option = node_operations.option(resize.dump(), "nodeDeallocationOption", node_operations.DEALLOCATION_OPTIONS)
    check = write_conditions(request)
    await pools.resize(
        control(request), pool_id, resize.target_dedicated_nodes, check, resize.target_low_priority_nodes, option
    )
    return empty(202, request)
