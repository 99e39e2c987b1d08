"""The FastAPI application: routers, Shared Key, api-version, request ids, Batch errors."""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kiln.api import (
    account,
    applications,
    auth,
    autoscale,
    faults,
    files,
    job_auth,
    jobs,
    kiln_nodes,
    node_operations,
    nodes,
    operations,
    pool_updates,
    pools,
    schedules,
    statistics,
    stories,
    tasks,
    transfers,
    versioning,
)
from kiln.api import metrics as metrics_api
from kiln.api.context import Kiln
from kiln.api.http import MAX_BODY_BYTES, NotModified, declares_no_body, error_response
from kiln.api.request_ids import RequestIds
from kiln.errors import BadRequest, KilnError, NotFound, RequestBodyTooLarge
from kiln.web import pages as web_pages
from kiln.wire.times import now

logger = logging.getLogger(__name__)


def _api_version(request: Request) -> None:
    versioning.check(request, request.app.state.kiln.loose_api_version)


async def _authenticate(request: Request) -> None:
    state: Kiln = request.app.state.kiln
    token = job_auth.bearer_token(request.headers.get("authorization"))
    if token is not None:  # a task's AZ_BATCH_AUTHENTICATION_TOKEN: its own job only
        await job_auth.verify_job_token(request, state, token)
        _api_version(request)
        return
    await _shared_key(request)
    _api_version(request)


async def _shared_key(request: Request) -> None:
    """The account's Shared Key: Batch's routes and Kiln's own (which take no api-version)."""
    state: Kiln = request.app.state.kiln
    auth.verify_shared_key(
        request.method,
        request.scope.get("raw_path") or request.url.path.encode(),
        request.scope.get("query_string", b""),
        request.headers,
        await _body_length(request),
        {state.account_name: state.account_key},
        now(),
    )


async def _body_length(request: Request) -> int:
    """The body's length: 0 without reading it when the request declares none."""
    return 0 if declares_no_body(request.scope) else len(await request.body())


class BodyLimit:
    """Refuse a request body over MAX_BODY_BYTES while it streams in, before authentication reads it: by its
    Content-Length before a byte of it is read, else (chunked) as soon as what arrived passes the limit."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or declares_no_body(scope):
            await self.app(scope, receive, send)
            return
        limit = (
            applications.PACKAGE_MAX_BYTES if scope["path"].startswith(applications.UPLOAD_PREFIX) else MAX_BODY_BYTES
        )
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            raise _body_too_large(limit)
        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise _body_too_large(limit)
            return message

        await self.app(scope, receive_limited, send)


def _body_too_large(limit: int) -> RequestBodyTooLarge:
    return RequestBodyTooLarge(
        f"The request body is too large: Batch accepts at most {limit} bytes (a task collection: fewer tasks per call)."
    )


def create_app(state: Kiln, lifespan: Callable | None = None) -> FastAPI:
    app = FastAPI(title="Kiln", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.kiln = state
    # Busiest first: a request is matched against each router's routes in turn (no two routers' routes match
    # one path and method, so the order changes only how many are tried; test_routing checks that).
    for module in (jobs, tasks, pools, nodes, files, schedules, node_operations, autoscale):
        app.include_router(module.router, dependencies=[Depends(_authenticate)])
    app.include_router(account.router, dependencies=[Depends(_authenticate)])
    app.include_router(applications.router, dependencies=[Depends(_authenticate)])
    app.include_router(pool_updates.router, dependencies=[Depends(_authenticate)])
    app.include_router(statistics.router, dependencies=[Depends(_authenticate)])
    app.include_router(stories.router, dependencies=[Depends(_shared_key)])
    app.include_router(web_pages.router)  # the dashboard: its own login and session cookie
    app.include_router(faults.router, dependencies=[Depends(_shared_key)])
    app.include_router(metrics_api.router)
    app.include_router(applications.kiln_router, dependencies=[Depends(_shared_key)])
    app.include_router(kiln_nodes.router, dependencies=[Depends(_shared_key)])
    app.include_router(transfers.router, dependencies=[Depends(_shared_key)])
    app.add_middleware(BodyLimit)  # added first: request_ids below wraps it, so its 413 carries a request id
    app.add_middleware(versioning.Downgrade, loose=state.loose_api_version)

    app.add_middleware(RequestIds)  # outside the two above: their answers carry a request id too

    @app.exception_handler(KilnError)
    async def batch_error(request: Request, exc: KilnError) -> Response:
        return error_response(request, exc)

    @app.exception_handler(NotModified)
    async def not_modified(request: Request, exc: NotModified) -> Response:
        return Response(status_code=304)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        problem = exc.errors()[0]
        name = str(problem["loc"][-1])
        return error_response(
            request,
            BadRequest(
                f"Invalid value for '{name}': {problem['msg']}",
                code="InvalidQueryParameterValue",
                values={"QueryParameterName": name},
            ),
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code in (404, 405) and (
            operation := operations.batch_operation(request.method, request.url.path)
        ):
            return error_response(request, operations.not_implemented(operation, request.method, request.url.path))
        if exc.status_code == 404:
            return error_response(
                request, NotFound("The requested URI does not represent any resource on the server.", code="InvalidUri")
            )
        if exc.status_code == 405:
            return error_response(
                request,
                KilnError(
                    "The HTTP method is not supported for this resource.", code="UnsupportedHttpVerb", status=405
                ),
            )
        return error_response(request, KilnError(str(exc.detail), status=exc.status_code))

    return app
