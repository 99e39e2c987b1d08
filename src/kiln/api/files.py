"""Node files and task files: list, read (with ocp-range), properties, delete."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response

from kiln.api import odata, render
from kiln.api.context import control
from kiln.api.http import base_url, list_response
from kiln.commands import files
from kiln.commands.files import FileEntry, Location
from kiln.errors import KilnError
from kiln.wire.times import format_http_time

router = APIRouter()
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


def _truthy(value: str | None) -> bool:
    return (value or "").lower() == "true"


def _url(request: Request, location: Location) -> str:
    return f"{base_url(request)}/{location.path}/files"


async def _list(request: Request, location: Location) -> Response:
    entries = await files.list_files(control(request), location, _truthy(request.query_params.get("recursive")))
    prefix = _url(request, location)
    docs = [render.file_entry(e, prefix) for e in entries]
    return list_response(request, docs, "files", odata.FILE_FILTERS)


def _properties(entry: FileEntry, url: str) -> dict[str, str]:
    headers = {
        "ocp-creation-time": format_http_time(datetime.fromtimestamp(entry.ctime, UTC)),
        "Last-Modified": format_http_time(datetime.fromtimestamp(entry.mtime, UTC)),
        "ocp-batch-file-isdirectory": str(entry.is_directory),
        "ocp-batch-file-url": quote(url, safe=""),
        "ocp-batch-file-mode": f"{entry.mode & 0o7777:o}",
        "Content-Type": render.content_type(entry.name),
    }
    if not entry.is_directory:
        headers["Content-Length"] = str(entry.size)
    return headers


async def _read(request: Request, location: Location, path: str, *, head: bool) -> Response:
    entry = await files.stat(control(request), location, path)
    headers = _properties(entry, f"{_url(request, location)}/{path}")
    if head or entry.is_directory:
        return Response(status_code=200, headers=headers)
    start, end = 0, None
    if wanted := request.headers.get("ocp-range"):
        match = _RANGE.match(wanted.strip())
        if not match or int(match.group(1)) >= max(entry.size, 1):
            raise KilnError(
                f"The range '{wanted}' is not satisfiable for a file of {entry.size} bytes.",
                code="InvalidRange",
                status=416,
            )
        start, end = int(match.group(1)), int(match.group(2)) if match.group(2) else None
    data = await files.read(control(request), location, path, start, end)
    headers["Content-Length"] = str(len(data))
    return Response(content=data, status_code=200, headers=headers)


async def _one_file(request: Request, location: Location, path: str) -> Response:
    if request.method == "DELETE":
        await files.delete(control(request), location, path, _truthy(request.query_params.get("recursive")))
        return Response(status_code=200)
    return await _read(request, location, path, head=request.method == "HEAD")


@router.get("/pools/{pool_id}/nodes/{node_id}/files")
async def list_node_files(request: Request, pool_id: str, node_id: str) -> Response:
    return await _list(request, await files.node_files(control(request), pool_id, node_id))


@router.get("/jobs/{job_id}/tasks/{task_id}/files")
async def list_task_files(request: Request, job_id: str, task_id: str) -> Response:
    return await _list(request, await files.task_files(control(request), job_id, task_id))


@router.api_route("/pools/{pool_id}/nodes/{node_id}/files/{path:path}", methods=["GET", "HEAD", "DELETE"])
async def node_file(request: Request, pool_id: str, node_id: str, path: str) -> Response:
    return await _one_file(request, await files.node_files(control(request), pool_id, node_id), path)


@router.api_route("/jobs/{job_id}/tasks/{task_id}/files/{path:path}", methods=["GET", "HEAD", "DELETE"])
async def task_file(request: Request, job_id: str, task_id: str, path: str) -> Response:
    return await _one_file(request, await files.task_files(control(request), job_id, task_id), path)
