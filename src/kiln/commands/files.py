"""Node files and task files: where they are, and listing, reading and deleting them on their node."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from kiln.commands import nodes, tasks
from kiln.commands.control import Control
from kiln.compute.protocol import FileEntry
from kiln.core import task as task_rules
from kiln.errors import BadRequest, Conflict, KilnError, NotFound
from kiln.wire.times import now

__all__ = ["FileEntry", "Location", "below", "node_files", "task_files", "list_files", "stat", "read", "delete"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Location:
    """Where a node's or a task's files are."""

    node_id: str
    root: str  #: the directory inside the node root ("" for the node's own files)
    path: str  #: the resource they belong to, as in Batch's URL: pools/{pool}/nodes/{node} or jobs/{job}/tasks/{task}


async def node_files(control: Control, pool_id: str, node_id: str) -> Location:
    pool, node = await control.database.read(lambda conn: nodes.load(conn, pool_id, node_id))
    return Location(node["id"], "", f"pools/{pool['id']}/nodes/{node['id']}")


async def task_files(control: Control, job_id: str, task_id: str) -> Location:
    """Only a task that ran on a node has files, and only until its retention time has passed."""
    job, task = await control.database.read(lambda conn: tasks.load(conn, job_id, task_id))
    if not task["node_id"]:
        raise Conflict("The task has not run on a node yet, so it has no files.", code="TaskFilesUnavailable")
    if task_rules.past_retention(task, now()):
        raise Conflict("The task's retention time has passed and its files were cleaned up.", code="TaskFilesCleanedup")
    return Location(task["node_id"], task_rules.task_dir(job["id"], task["id"]), f"jobs/{job['id']}/tasks/{task['id']}")


def _clean(path: str) -> str:
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if path.startswith("/") or ".." in parts:
        raise BadRequest("The file path must be relative and may not contain '..'.", code="InvalidUri")
    return "/".join(parts)


def _relative(location: Location, path: str) -> str:
    return "/".join(p for p in (location.root, _clean(path)) if p)


def below(location: Location, path: str) -> Location:
    """The files in a directory under a location's."""
    return Location(location.node_id, _relative(location, path), location.path)


async def _on_node(call: Awaitable[T]) -> T:
    """The node's answer, its failures as Batch errors."""
    try:
        return await call
    except FileNotFoundError:
        raise NotFound("The specified file does not exist.", code="FileNotFound") from None
    except IsADirectoryError:
        raise Conflict("The directory is not empty; delete it with recursive=true.", code="DirectoryNotEmpty") from None
    except ValueError as exc:
        raise BadRequest(str(exc), code="InvalidUri") from None
    except KilnError:
        raise
    except Exception as exc:  # the node is not reachable
        raise Conflict(f"The compute node is not available: {exc}", code="NodeNotReady") from None


async def list_files(control: Control, location: Location, recursive: bool) -> list[FileEntry]:
    """The entries under the location, by name."""
    entries = await _on_node(control.backend.list_files(location.node_id, location.root, recursive))
    return sorted(entries, key=lambda e: e.name)


async def stat(control: Control, location: Location, path: str) -> FileEntry:
    return await _on_node(control.backend.stat_file(location.node_id, _relative(location, path)))


async def read(control: Control, location: Location, path: str, start: int, end: int | None) -> bytes:
    """Bytes start..end (inclusive; None: to the end of the file)."""
    return await _on_node(control.backend.read_file(location.node_id, _relative(location, path), start, end))


async def delete(control: Control, location: Location, path: str, recursive: bool) -> None:
    await _on_node(control.backend.delete_file(location.node_id, _relative(location, path), recursive))
