"""Kiln-specific, outside Batch's routes: preempt a low-priority (spot) node on demand, so that code written
for Batch can be tested against preemption. Same Shared Key authentication as Batch's routes; no api-version."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from kiln.api.context import control
from kiln.api.http import json_response
from kiln.commands import node_operations

router = APIRouter()


@router.post("/kiln/pools/{pool_id}/nodes/{node_id}/preempt")
async def preempt_node(request: Request, pool_id: str, node_id: str) -> Response:
    pool, node = await node_operations.preempt(control(request), pool_id, node_id)
    return json_response({"poolId": pool["id"], "nodeId": node["id"], "state": node["state"]})
