"""/pools/{pool}/nodes: list and get compute nodes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import Connection, func, select

from kiln.api import odata, render
from kiln.api.context import kiln
from kiln.api.http import base_url, empty, json_response, list_response, metadata_url, read_json
from kiln.api.pools import load_pool
from kiln.errors import InvalidPropertyValue, NotFound
from kiln.store import rows as db

router = APIRouter()


def _running(conn: Connection, pool_key: str) -> dict[str, tuple[int, int]]:
    """(tasks, slots) of job tasks on each node; prep and release count for neither."""
    tasks = db.tasks
    query = (
        select(tasks.c.node_id, func.count(), func.sum(tasks.c.required_slots))
        .where(tasks.c.state.in_(["running", "preparing"]), tasks.c.node_id.is_not(None))
        .group_by(tasks.c.node_id)
    )
    running = {node_id: (count, slots or 0) for node_id, count, slots in conn.execute(query)}
    subtasks = db.subtasks  # a running subtask of a multi-instance task holds one slot of its node
    query = (
        select(subtasks.c.node_id, func.count())
        .where(subtasks.c.state == "running", subtasks.c.id > 0)
        .group_by(subtasks.c.node_id)
    )
    for node_id, count in conn.execute(query):
        tasks_count, slots = running.get(node_id, (0, 0))
        running[node_id] = (tasks_count + count, slots + count)
    return running


def load_node(conn: Connection, pool_id: str, node_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    pool = load_pool(conn, pool_id)
    node = db.get(conn, db.nodes, id=node_id)
    if node is None or node["pool_key"] != pool["key"]:
        raise NotFound("The specified compute node does not exist.", code="NodeNotFound")
    return pool, node


@router.get("/pools/{pool_id}/nodes")
async def list_nodes(request: Request, pool_id: str) -> Response:
    def read(conn: Connection):
        pool = load_pool(conn, pool_id)
        return (
            pool,
            db.find(conn, db.nodes, order_by=["allocation_time", "id"], pool_key=pool["key"]),
            _running(conn, pool["key"]),
        )

    pool, nodes, running = await kiln(request).database.read(read)
    base = base_url(request)
    docs = [render.node(n, pool, base, *running.get(n["id"], (0, 0))) for n in nodes]
    return list_response(request, docs, "nodes", odata.NODE_FILTERS)


@router.get("/pools/{pool_id}/nodes/{node_id}")
async def get_node(request: Request, pool_id: str, node_id: str) -> Response:
    def read(conn: Connection):
        pool, node = load_node(conn, pool_id, node_id)
        return pool, node, _running(conn, pool["key"])

    pool, node, running = await kiln(request).database.read(read)
    doc = render.node(node, pool, base_url(request), *running.get(node["id"], (0, 0)))
    body = {
        "odata.metadata": metadata_url(request, "nodes/@Element"),
        **odata.apply_select(doc, request.query_params.get("$select")),
    }
    return json_response(body)


_OPTIONS = ("requeue", "terminate", "taskcompletion", "retaineddata")


async def _restart(request: Request, pool_id: str, node_id: str, field: str, reimage: bool) -> Response:
    body = await read_json(request, optional=True)
    option = str(body.get(field) or "requeue").lower()
    if option not in _OPTIONS:
        raise InvalidPropertyValue(field, option, f"{field} must be one of: {', '.join(_OPTIONS)}.")
    state = kiln(request)
    _, node = await state.database.read(lambda conn: load_node(conn, pool_id, node_id))
    await state.scheduler.restart_node(node["id"], option, reimage=reimage)
    return empty(202, request)


@router.post("/pools/{pool_id}/nodes/{node_id}/reboot")
async def reboot_node(request: Request, pool_id: str, node_id: str) -> Response:
    return await _restart(request, pool_id, node_id, "nodeRebootOption", reimage=False)


@router.post("/pools/{pool_id}/nodes/{node_id}/reimage")
async def reimage_node(request: Request, pool_id: str, node_id: str) -> Response:
    return await _restart(request, pool_id, node_id, "nodeReimageOption", reimage=True)
