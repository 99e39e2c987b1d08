"""Which api-version a request is served as, and its JSON answer in that version's shape (wire/versions.py)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from urllib.parse import parse_qsl

from fastapi import Request
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kiln.errors import BadRequest
from kiln.wire import versions

_NEWEST_QUERY = f"api-version={versions.NEWEST}".encode()


def requested(query_string: bytes | str) -> str | None:
    """The api-version query parameter as sent (its name is case-insensitive), or None."""
    text = query_string.decode("latin-1") if isinstance(query_string, bytes) else query_string
    return next((value for name, value in parse_qsl(text) if name.lower() == "api-version"), None)


def check(request: Request, loose: bool) -> str:
    """The version a Batch request is served as; Batch's 400 for a missing or unsupported one."""
    sent = requested(request.scope.get("query_string", b""))
    supported = ", ".join(reversed(versions.VERSIONS))
    if sent is None:
        raise BadRequest(
            "The api-version query parameter is required. Supported versions: " + supported,
            code="MissingRequiredQueryParameter",
            values={"QueryParameterName": "api-version"},
        )
    served = versions.resolve(sent, loose=loose)
    if served is None:
        raise BadRequest(
            f"The api-version '{sent}' is not supported. Supported versions: {supported}",
            code="UnsupportedRequestVersion",
            values={"QueryParameterName": "api-version", "QueryParameterValue": sent},
        )
    request.state.api_version = served
    return served


def served(request: Request) -> str:
    """The version the request is served as (the newest before the check has run)."""
    return getattr(request.state, "api_version", versions.NEWEST)


def filter_names(request: Request) -> Callable[[str], str]:
    """How the request's `$filter` names properties in the newest version's names (an older client filters by
    its own, as it selects by them)."""
    return functools.partial(versions.upgrade_name, served(request))


class Downgrade:
    """Rewrite a JSON answer to a request of an older api-version into that version's shape. Requests of the
    newest version (nearly all) pass straight through; only Batch's own bodies (OData JSON) are rewritten, never
    a file's content, whatever its type."""

    def __init__(self, app: ASGIApp, loose: bool) -> None:
        self.app = app
        self.loose = loose

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = scope.get("query_string", b"") if scope["type"] == "http" else b""
        version = None if _NEWEST_QUERY in query else requested(query)
        version = versions.resolve(version, loose=self.loose) if version else None
        if version is None or not versions.changes_anything(version):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def send_downgraded(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                if "odata=" not in MutableHeaders(raw=message["headers"]).get("content-type", ""):
                    await send(message)
                    start = None
                return
            if start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = _downgraded(version, scope["path"], b"".join(chunks))
            headers = MutableHeaders(raw=start["headers"])
            headers["content-length"] = str(len(body))
            await send(start)
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, send_downgraded)


def _downgraded(version: str, path: str, body: bytes) -> bytes:
    try:
        document = json.loads(body)
    except ValueError:
        return body
    if not isinstance(document, dict):
        return body
    return json.dumps(versions.downgrade_response(version, path, document), separators=(",", ":")).encode()
