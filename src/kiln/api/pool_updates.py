"""Pool updates (PATCH, updateproperties)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from kiln.api.context import control
from kiln.api.http import empty, read_model, write_conditions
from kiln.commands import pool_updates
from kiln.wire.pool_updates import PoolPatch, PoolReplace

router = APIRouter()


@router.patch("/pools/{pool_id}")
async def patch_pool(request: Request, pool_id: str) -> Response:
    body = await read_model(request, PoolPatch)
    body.check()
    row = await pool_updates.patch(control(request), pool_id, body, write_conditions(request))
    return empty(200, request, row)


@router.post("/pools/{pool_id}/updateproperties")
async def replace_pool_properties(request: Request, pool_id: str) -> Response:
    body = await read_model(request, PoolReplace)
    body.check()
    row = await pool_updates.replace(control(request), pool_id, body, write_conditions(request))
    return empty(204, request, row)
