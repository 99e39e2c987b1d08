"""Kiln-specific, outside Batch's routes: faults on demand, for testing how a Batch application copes with
a lost node, a failing preparation or start task, a failing resource-file download, slow dispatch or a killed
task. Same Shared Key authentication as Batch's routes; no api-version."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from kiln.api.context import control
from kiln.api.http import json_response, read_json
from kiln.commands import faults
from kiln.commands.control import Control
from kiln.errors import InvalidPropertyValue, MissingRequiredProperty

router = APIRouter()

#: The longest delay or duration a slow dispatch takes (seconds): an hour.
LONGEST = 3600


def _integer(body: dict[str, Any], name: str, low: int, high: int, what: str, default: int | None = None) -> int:
    """body[name], an integer from low to high (a missing one is the default, if there is one)."""
    if name not in body and default is not None:
        return default
    if name not in body:
        raise MissingRequiredProperty(name)
    value = body[name]
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidPropertyValue(name, value, f"{what} from {low} to {high}.")
    return value


def _status(body: dict[str, Any]) -> int:
    return _integer(body, "httpStatus", 400, 599, "An HTTP error status", default=404)


@router.post("/kiln/pools/{pool_id}/nodes/{node_id}/faults/lose")
async def lose_node(request: Request, pool_id: str, node_id: str) -> Response:
    tasks = await faults.lose_node(control(request), pool_id, node_id)
    return json_response({"nodeId": node_id, "tasksOnNode": tasks}, status=202)


@router.post("/kiln/pools/{pool_id}/nodes/{node_id}/faults/fail-next-preparation")
async def fail_next_preparation(request: Request, pool_id: str, node_id: str) -> Response:
    return await _exits(request, pool_id, node_id, faults.fail_next_prep)


@router.post("/kiln/pools/{pool_id}/nodes/{node_id}/faults/fail-next-start-task")
async def fail_next_start_task(request: Request, pool_id: str, node_id: str) -> Response:
    return await _exits(request, pool_id, node_id, faults.fail_next_start)


async def _exits(
    request: Request, pool_id: str, node_id: str, apply: Callable[[Control, str, str, int], Awaitable[None]]
) -> Response:
    """A fault that makes the node's next step of a kind exit with the body's exitCode."""
    exit_code = _integer(await read_json(request), "exitCode", 1, 255, "An exit code")
    await apply(control(request), pool_id, node_id, exit_code)
    return json_response({"nodeId": node_id, "exitCode": exit_code}, status=202)


@router.post("/kiln/pools/{pool_id}/nodes/{node_id}/faults/fail-next-download")
async def fail_next_node_download(request: Request, pool_id: str, node_id: str) -> Response:
    status = _status(await read_json(request))
    await faults.fail_next_node_download(control(request), pool_id, node_id, status)
    return json_response({"nodeId": node_id, "httpStatus": status}, status=202)


@router.post("/kiln/jobs/{job_id}/faults/fail-next-download")
async def fail_next_job_download(request: Request, job_id: str) -> Response:
    status = _status(await read_json(request))
    await faults.fail_next_job_download(control(request), job_id, status)
    return json_response({"jobId": job_id, "httpStatus": status}, status=202)


@router.post("/kiln/pools/{pool_id}/nodes/{node_id}/faults/slow-dispatch")
async def slow_dispatch(request: Request, pool_id: str, node_id: str) -> Response:
    """{delaySeconds, steps (default 1) | durationSeconds}: the node's next steps, or its steps for a while."""
    body = await read_json(request)
    delay = _integer(body, "delaySeconds", 1, LONGEST, "A delay in seconds")
    if "steps" in body and "durationSeconds" in body:
        raise InvalidPropertyValue(
            "durationSeconds", body["durationSeconds"], "Give steps or durationSeconds, not both."
        )
    seconds = (
        _integer(body, "durationSeconds", 1, LONGEST, "A duration in seconds") if "durationSeconds" in body else None
    )
    steps = None if seconds is not None else _integer(body, "steps", 1, 1_000_000, "A number of steps", default=1)
    await faults.slow_dispatch(control(request), pool_id, node_id, delay, steps, seconds)
    answer = {"nodeId": node_id, "delaySeconds": delay, "steps": steps, "durationSeconds": seconds}
    return json_response({k: v for k, v in answer.items() if v is not None}, status=202)


@router.post("/kiln/jobs/{job_id}/tasks/{task_id}/faults/kill")
async def kill_task(request: Request, job_id: str, task_id: str) -> Response:
    killed = await faults.kill_task(control(request), job_id, task_id)
    return json_response({"taskId": task_id, "killedProcesses": killed}, status=202)
