"""Account-wide lists: supported images, the pools' node counts and their usage metrics."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import Response

from kiln.api import odata
from kiln.api.context import control
from kiln.api.http import list_response
from kiln.commands import account
from kiln.errors import InvalidQueryParameterValue
from kiln.wire.images import supported_images

router = APIRouter()


@router.get("/supportedimages")
async def list_supported_images(request: Request) -> Response:
    return list_response(request, supported_images(), "supportedimages", odata.IMAGE_FILTERS)


@router.get("/nodecounts")
async def list_pool_node_counts(request: Request) -> Response:
    return list_response(
        request, await account.node_counts(control(request)), "poolnodecounts", odata.NODE_COUNT_FILTERS
    )


@router.get("/poolusagemetrics")
async def list_pool_usage_metrics(request: Request) -> Response:
    start, end = _time_parameter(request, "startTime"), _time_parameter(request, "endTime")
    docs = await account.usage_metrics(control(request), start, end)
    return list_response(request, docs, "poolusagemetrics", odata.USAGE_METRICS_FILTERS)


def _time_parameter(request: Request, name: str) -> datetime | None:
    """startTime / endtime (the SDK spells the second so), by name without case."""
    text = next((v for k, v in request.query_params.items() if k.lower() == name.lower()), None)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidQueryParameterValue(name, text, "The value is not an ISO 8601 time.") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
