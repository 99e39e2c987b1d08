"""Application packages: Batch's data-plane reads (`/applications`) and Kiln's own way to add a package
(`PUT /kiln/applications/{id}/versions/{version}`, the zip as the body; Shared Key, no api-version)."""

from __future__ import annotations

from types import MappingProxyType

from fastapi import APIRouter, Request
from fastapi.responses import Response

from kiln.api import odata
from kiln.api.context import control
from kiln.api.http import json_response, list_response, metadata_url
from kiln.commands import applications

#: Batch's reads, under Batch's authentication and api-version.
router = APIRouter()
#: Kiln's own route (see stories.py for the same split).
kiln_router = APIRouter()

#: Where Kiln's package uploads go: they may be larger than Batch's 1 MB request bodies.
UPLOAD_PREFIX = "/kiln/applications/"
#: The largest package Kiln takes.
PACKAGE_MAX_BYTES = 1024 * 1024 * 1024
#: listApplications takes maxresults but no $filter.
_NO_FILTER: odata.Allowed = MappingProxyType({})


@router.get("/applications")
async def list_applications(request: Request) -> Response:
    docs = [app.to_wire() for app in applications.list_all(control(request))]
    return list_response(request, docs, "listapplicationsummariesresponses", _NO_FILTER)


@router.get("/applications/{application_id}")
async def get_application(request: Request, application_id: str) -> Response:
    app = applications.get(control(request), application_id)
    body = {"odata.metadata": metadata_url(request, "getapplicationsummaryresponse/@Element"), **app.to_wire()}
    return json_response(body)


@kiln_router.put(UPLOAD_PREFIX + "{application_id}/versions/{version}")
async def add_package(request: Request, application_id: str, version: str) -> Response:
    """Query: `default=true` makes it the application's default version; `displayName=…`."""
    query = request.query_params
    app = await applications.add(
        control(request),
        application_id,
        version,
        await request.body(),
        default=query.get("default", "").lower() == "true",
        display_name=query.get("displayName"),
    )
    return json_response(app.to_wire(), status=201)
