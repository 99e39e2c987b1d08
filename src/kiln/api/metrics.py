"""GET /metrics: Prometheus' text format (docs/metrics.md). Outside Batch's routes and, as scrapers expect,
without authentication: it holds counts and timings, no ids, and is served where the server binds."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from kiln.api.context import control
from kiln.commands import metrics

router = APIRouter()


@router.get("/metrics")
async def get_metrics(request: Request) -> Response:
    return Response(await metrics.scrape(control(request)), media_type=CONTENT_TYPE_LATEST)
