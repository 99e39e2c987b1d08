"""Kiln-specific, outside Batch's routes: faults on demand, for testing how a Batch application copes with
a lost node, a failing preparation task or a killed task. Same Shared Key authentication as Batch's
routes; no api-version."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from kiln.api.context import control
from kiln.api.http import json_response, read_json
from kiln.commands import faults
from kiln.errors import InvalidPropertyValue, MissingRequiredProperty

router = APIRouter()


@router.post("/kiln/pools/{pool_id}/nodes/{node_id}/faults/lose")
async def lose_node(request: Request, pool_id: str, node_id: str) -> Response:
    tasks = await faults.lose_node(control(request), pool_id, node_id)
    return json_response({"nodeId": node_id, "tasksOnNode": tasks}, status=202)


@router.post("/kiln/pools/{pool_id}/nodes/{node_id}/faults/fail-next-preparation")
async def fail_next_preparation(request: Request, pool_id: str, node_id: str) -> Response:
    body = await read_json(request)
    if "exitCode" not in body:
        raise MissingRequiredProperty("exitCode")
    exit_code = body["exitCode"]
    if not isinstance(exit_code, int) or isinstance(exit_code, bool) or not 1 <= exit_code <= 255:
        raise InvalidPropertyValue("exitCode", exit_code, "An exit code from 1 to 255.")
    await faults.fail_next_prep(control(request), pool_id, node_id, exit_code)
    return json_response({"nodeId": node_id, "exitCode": exit_code}, status=202)


@router.post("/kiln/jobs/{job_id}/tasks/{task_id}/faults/kill")
async def kill_task(request: Request, job_id: str, task_id: str) -> Response:
    killed = await faults.kill_task(control(request), job_id, task_id)
    return json_response({"taskId": task_id, "killedProcesses": killed}, status=202)
