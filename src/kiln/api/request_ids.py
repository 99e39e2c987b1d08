"""Every answer's request id (and the client's, when it asks for it back), the request counter, and a Batch
error body for what escapes the routes: as plain ASGI, since Starlette's BaseHTTPMiddleware runs each
request's app in a task of its own and streams the body back through a queue (~10% of a busy server's CPU
under 20 clients paging tasks)."""

from __future__ import annotations

import logging
import uuid

from fastapi import Request
from fastapi.responses import Response
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kiln import metrics, story
from kiln.api.http import NotModified, error_response
from kiln.errors import KilnError

logger = logging.getLogger(__name__)


class RequestIds:
    """The outermost of Kiln's middlewares: every HTTP answer passes through it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._answer_with_ids(scope, receive, send)
        else:  # lifespan
            await self.app(scope, receive, send)

    async def _answer_with_ids(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope)
        request.state.request_id = str(uuid.uuid4())
        client_id = request.headers.get("client-request-id")
        echo = client_id if request.headers.get("return-client-request-id", "").lower() == "true" else None
        status: int | None = None  # until the answer starts

        async def send_with_ids(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["request-id"] = request.state.request_id
                if echo:
                    headers["client-request-id"] = echo
            await send(message)

        try:
            with story.caused_by(_stimulus(request)):
                await self.app(scope, receive, send_with_ids)
        except Exception as error:
            if status is not None:
                raise
            await _answer(request, error)(scope, receive, send_with_ids)
        finally:
            route = scope.get("route")  # the matched route's template: ids would make a series each
            metrics.request_answered(request.method, getattr(route, "path", "(none)"), status or 500)


def _answer(request: Request, error: Exception) -> Response:
    """What an exception no route handled answers."""
    if isinstance(error, NotModified):
        return Response(status_code=304)
    if isinstance(error, KilnError):  # raised outside a route: BodyLimit's 413
        return error_response(request, error)
    logger.exception("%s %s failed", request.method, request.url.path, exc_info=error)
    return error_response(request, KilnError())  # a bug: still a Batch error body, never a dropped connection


def _stimulus(request: Request) -> str:
    """How a request shows in the stories of what it changed (its path as the scope has it: request.url would
    build the whole URL, a tenth of this middleware's time)."""
    client_id = request.headers.get("client-request-id")
    client = f" client {client_id}" if client_id else ""
    return f"request {request.state.request_id}{client} {request.method} {request.scope['path']}"
