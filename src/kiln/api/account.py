"""Account-wide lists: supported images and the pools' node counts."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from kiln.api import odata
from kiln.api.context import control
from kiln.api.http import list_response
from kiln.commands import account
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
