"""/pools: create, read, list, update, resize, delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import Connection, func, select

from kiln.api import odata, render
from kiln.api.context import kiln
from kiln.api.http import (
    base_url,
    check_write_conditions,
    empty,
    entity_response,
    list_response,
    parse,
    read_json,
    read_model,
)
from kiln.core import pool as pool_rules
from kiln.core.pool import AllocationState, PoolState
from kiln.errors import Conflict, NotFound
from kiln.store import rows as db
from kiln.wire import ids
from kiln.wire.models import PoolAdd, PoolResize
from kiln.wire.times import now

router = APIRouter()


def pool_not_found() -> NotFound:
    return NotFound("The specified pool does not exist.", code="PoolNotFound")


def load_pool(conn: Connection, pool_id: str) -> dict[str, Any]:
    row = db.get(conn, db.pools, key=ids.key(pool_id))
    if row is None:
        raise pool_not_found()
    return row


def _node_counts(conn: Connection) -> dict[str, int]:
    query = select(db.nodes.c.pool_key, func.count()).group_by(db.nodes.c.pool_key)
    return {key: count for key, count in conn.execute(query)}


@router.post("/pools")
async def add_pool(request: Request) -> Response:
    spec = await read_model(request, PoolAdd)
    spec.check()
    row = pool_rules.new_row(
        spec.id,
        spec.materialize(),
        target_dedicated=spec.target_dedicated_nodes,
        target_low_priority=spec.target_low_priority_nodes,
        slots_per_node=spec.task_slots_per_node,
        now=now(),
        etag=db.new_etag(),
    )

    def insert(conn: Connection) -> None:
        if db.get(conn, db.pools, key=row["key"]) is not None:
            raise Conflict("The specified pool already exists.", code="PoolExists")
        db.insert_rows(conn, db.pools, [row])

    state = kiln(request)
    await state.database.write(insert)
    await state.scheduler.create_pool(row)
    return empty(201, request, row, location=f"{base_url(request)}/pools/{spec.id}")


@router.get("/pools")
async def list_pools(request: Request) -> Response:
    def read(conn: Connection):
        return db.find(conn, db.pools, order_by=["key"]), _node_counts(conn)

    pools, counts = await kiln(request).database.read(read)
    base = base_url(request)
    docs = [render.pool(p, base, counts.get(p["key"], 0)) for p in pools]
    return list_response(request, docs, "pools", odata.POOL_FILTERS)


async def _one_pool(request: Request, pool_id: str) -> tuple[dict[str, Any], int]:
    def read(conn: Connection):
        row = load_pool(conn, pool_id)
        return row, _node_counts(conn).get(row["key"], 0)

    return await kiln(request).database.read(read)


@router.get("/pools/{pool_id}")
async def get_pool(request: Request, pool_id: str) -> Response:
    row, count = await _one_pool(request, pool_id)
    return entity_response(request, render.pool(row, base_url(request), count), row, "pools/@Element")


@router.head("/pools/{pool_id}")
async def pool_exists(request: Request, pool_id: str) -> Response:
    row, _ = await _one_pool(request, pool_id)
    return empty(200, request, row)


@router.patch("/pools/{pool_id}")
async def patch_pool(request: Request, pool_id: str) -> Response:
    body = await read_json(request)
    allowed = {"startTask", "metadata", "applicationPackageReferences", "targetNodeCommunicationMode"}
    unknown = sorted(set(body) - allowed)
    if unknown:
        from kiln.errors import InvalidPropertyValue

        raise InvalidPropertyValue(unknown[0], None, "This property cannot be changed with a pool update.")
    if "startTask" in body and body["startTask"] is not None:
        from kiln.wire.models import StartTask

        parse(StartTask, body["startTask"])

    def update(conn: Connection) -> dict[str, Any]:
        row = load_pool(conn, pool_id)
        check_write_conditions(request, row)
        if row["state"] == PoolState.DELETING:
            raise Conflict(
                "The specified pool has been marked for deletion and is being reclaimed.", code="PoolBeingDeleted"
            )
        spec = {**row["spec"], **body}
        db.change(conn, db.pools, {"key": row["key"]}, {"spec": spec, "last_modified": now()}, bump_etag=True)
        return db.reread(conn, db.pools, key=row["key"])

    row = await kiln(request).database.write(update)
    return empty(200, request, row)


@router.delete("/pools/{pool_id}")
async def delete_pool(request: Request, pool_id: str) -> Response:
    state = kiln(request)
    row, _ = await _one_pool(request, pool_id)
    check_write_conditions(request, row)
    if row["state"] == PoolState.DELETING:
        raise Conflict(
            "The specified pool has been marked for deletion and is being reclaimed.", code="PoolBeingDeleted"
        )
    await state.scheduler.delete_pool(row["key"])
    return empty(202, request)


@router.post("/pools/{pool_id}/resize")
async def resize_pool(request: Request, pool_id: str) -> Response:
    resize = await read_model(request, PoolResize)
    row, _ = await _one_pool(request, pool_id)
    check_write_conditions(request, row)
    if row["allocation_state"] != AllocationState.STEADY:
        raise Conflict(
            "The pool is already resizing; wait until its allocation state is steady.", code="PoolBeingResized"
        )
    target = row["target_dedicated_nodes"] if resize.target_dedicated_nodes is None else resize.target_dedicated_nodes
    await kiln(request).scheduler.resize_pool(row["key"], target)
    return empty(202, request)
