"""Node files and task files: list, read (with ocp-range), properties, delete."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response

from kiln.api import odata, render
from kiln.api.context import kiln
from kiln.api.http import base_url, list_response
from kiln.commands.nodes import load as load_node
from kiln.commands.tasks import load as load_task
from kiln.compute.protocol import FileEntry
from kiln.errors import BadRequest, Conflict, KilnError, NotFound
from kiln.scheduler.steps import task_dir
from kiln.wire.times import duration_seconds, format_http_time, now

router = APIRouter()
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


def _clean(path: str) -> str:
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if path.startswith("/") or ".." in parts:
        raise BadRequest("The file path must be relative and may not contain '..'.", code="InvalidUri")
    return "/".join(parts)


def _file_not_found() -> NotFound:
    return NotFound("The specified file does not exist.", code="FileNotFound")


async def _node_location(request: Request, pool_id: str, node_id: str) -> tuple[str, str, str]:
    """(node id, directory inside the node root, URL prefix) of a node's files."""
    pool, node = await kiln(request).database.read(lambda conn: load_node(conn, pool_id, node_id))
    return node["id"], "", f"{base_url(request)}/pools/{pool['id']}/nodes/{node['id']}/files"


async def _task_location(request: Request, job_id: str, task_id: str) -> tuple[str, str, str]:
    job, task = await kiln(request).database.read(lambda conn: load_task(conn, job_id, task_id))
    if not task["node_id"]:
        raise Conflict("The task has not run on a node yet, so it has no files.", code="TaskFilesUnavailable")
    if _past_retention(task):
        raise Conflict("The task's retention time has passed and its files were cleaned up.", code="TaskFilesCleanedup")
    return (
        task["node_id"],
        task_dir(job["id"], task["id"]),
        f"{base_url(request)}/jobs/{job['id']}/tasks/{task['id']}/files",
    )


def _past_retention(task: dict) -> bool:
    """constraints.retentionTime counts from the task's end; after it the directory is (being) removed."""
    seconds = duration_seconds(task["spec"]["constraints"].get("retentionTime"))
    return (
        task["state"] == "completed"
        and task.get("end_time") is not None
        and seconds is not None
        and now() >= task["end_time"] + timedelta(seconds=seconds)
    )


async def _call(coro):
    try:
        return await coro
    except FileNotFoundError:
        raise _file_not_found() from None
    except IsADirectoryError:
        raise Conflict("The directory is not empty; delete it with recursive=true.", code="DirectoryNotEmpty") from None
    except ValueError as exc:
        raise BadRequest(str(exc), code="InvalidUri") from None
    except KilnError:
        raise
    except Exception as exc:  # the node is not reachable
        raise Conflict(f"The compute node is not available: {exc}", code="NodeNotReady") from None


def _truthy(value: str | None) -> bool:
    return (value or "").lower() == "true"


async def _list(request: Request, node_id: str, root: str, prefix: str) -> Response:
    entries: list[FileEntry] = await _call(
        kiln(request).backend.list_files(node_id, root, _truthy(request.query_params.get("recursive")))
    )
    docs = [render.file_entry(e, prefix) for e in sorted(entries, key=lambda e: e.name)]
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


async def _read(request: Request, node_id: str, root: str, path: str, prefix: str, *, head: bool) -> Response:
    relative = "/".join(p for p in (root, _clean(path)) if p)
    backend = kiln(request).backend
    entry: FileEntry = await _call(backend.stat_file(node_id, relative))
    headers = _properties(entry, f"{prefix}/{path}")
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
    data: bytes = await _call(backend.read_file(node_id, relative, start, end))
    headers["Content-Length"] = str(len(data))
    return Response(content=data, status_code=200, headers=headers)


async def _delete(request: Request, node_id: str, root: str, path: str) -> Response:
    relative = "/".join(p for p in (root, _clean(path)) if p)
    await _call(kiln(request).backend.delete_file(node_id, relative, _truthy(request.query_params.get("recursive"))))
    return Response(status_code=200)


@router.get("/pools/{pool_id}/nodes/{node_id}/files")
async def list_node_files(request: Request, pool_id: str, node_id: str) -> Response:
    return await _list(request, *await _node_location(request, pool_id, node_id))


@router.get("/jobs/{job_id}/tasks/{task_id}/files")
async def list_task_files(request: Request, job_id: str, task_id: str) -> Response:
    return await _list(request, *await _task_location(request, job_id, task_id))


async def _one_file(request: Request, location: tuple[str, str, str], path: str) -> Response:
    node, root, prefix = location
    if request.method == "DELETE":
        return await _delete(request, node, root, path)
    return await _read(request, node, root, path, prefix, head=request.method == "HEAD")


@router.api_route("/pools/{pool_id}/nodes/{node_id}/files/{path:path}", methods=["GET", "HEAD", "DELETE"])
async def node_file(request: Request, pool_id: str, node_id: str, path: str) -> Response:
    return await _one_file(request, await _node_location(request, pool_id, node_id), path)


@router.api_route("/jobs/{job_id}/tasks/{task_id}/files/{path:path}", methods=["GET", "HEAD", "DELETE"])
async def task_file(request: Request, job_id: str, task_id: str, path: str) -> Response:
    return await _one_file(request, await _task_location(request, job_id, task_id), path)
