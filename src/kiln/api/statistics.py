"""`$expand=stats`: the entities' statistics added to what GET renders, and the account's lifetime statistics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from kiln.api import selection
from kiln.api.context import control
from kiln.api.http import base_url, json_response, metadata_url
from kiln.commands import statistics as commands
from kiln.core import statistics
from kiln.wire.times import now

router = APIRouter()
Row = dict[str, Any]
Render = Callable[[Row], dict[str, Any]]
#: the entity set of each owner scope
scope_kind = {"job": "jobs", "schedule": "jobschedules"}


def expanded(request: Request, kind: str) -> bool:
    """The request's `$expand` names stats, the one name an entity set may expand (checked first, with
    `$select`: a bad name is a 400 before anything is read)."""
    selection.checked_select(request, kind)
    return request.query_params.get("$expand") is not None


async def tasks(request: Request, rows: Sequence[Row], render: Render) -> Render:
    """render, with each task's stats if they were asked for."""
    if not expanded(request, "tasks"):
        return render
    found = await commands.of_tasks(control(request), [row["seq"] for row in rows])
    return lambda row: _with(render(row), lambda url: statistics.task(found.get(row["seq"]), row, url))


async def owners(request: Request, scope: str, rows: Sequence[Row], render: Render) -> Render:
    """render, with each job's or job schedule's stats if they were asked for."""
    if not expanded(request, scope_kind[scope]):
        return render
    found = await commands.of_owners(control(request), scope, [row["key"] for row in rows])
    return lambda row: _with(
        render(row), lambda url: statistics.owner(found.get(row["key"]), row["creation_time"], url)
    )


async def pools(request: Request, rows: Sequence[Row], render: Render) -> Render:
    """render, with each pool's stats if they were asked for."""
    if not expanded(request, "pools"):
        return render
    found, moment = await commands.of_pools(control(request), rows), now()

    def stats(row: Row, url: str) -> dict[str, Any]:
        counters, node_time = found[row["key"]]
        return statistics.pool(counters, row["creation_time"], moment, node_time, url)

    return lambda row: _with(render(row), lambda url: stats(row, url))


def _with(doc: dict[str, Any], stats: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    """stats(url) made at the entity's URL + /stats."""
    doc["stats"] = stats(f"{doc['url']}/stats")
    return doc


@router.get("/lifetimejobstats")
async def job_lifetime_statistics(request: Request) -> Response:
    """Every job's tasks since the account's first (api-versions before 2023-05-01.17.0 have this operation)."""
    row, _ = await commands.lifetime(control(request))
    start = now() if row is None else row["start_time"]
    doc = statistics.owner(row, start, f"{base_url(request)}/lifetimejobstats")
    return json_response({"odata.metadata": metadata_url(request, "jobstats/@Element"), **doc})


@router.get("/lifetimepoolstats")
async def pool_lifetime_statistics(request: Request) -> Response:
    """Every pool's nodes and tasks since the account's first statistics."""
    row, node_time = await commands.lifetime(control(request))
    moment = now()
    start = moment if row is None else row["start_time"]
    doc = statistics.pool(row, start, moment, node_time, f"{base_url(request)}/lifetimepoolstats")
    return json_response({"odata.metadata": metadata_url(request, "poolstats/@Element"), **doc})
