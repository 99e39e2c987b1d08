"""api.request_ids around a bare app: each answer's request id, the client's id echoed when asked, what
escapes the app answered as a Batch error (never a dropped connection), and every answer counted."""

from __future__ import annotations

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from kiln import metrics
from kiln.api.http import NotModified
from kiln.api.request_ids import RequestIds
from kiln.errors import RequestBodyTooLarge


async def _app(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers with the request id it saw; /boom fails, /large refuses, /same is not modified."""
    request = Request(scope)
    failures = {
        "/boom": RuntimeError("a bug"),
        "/large": RequestBodyTooLarge("too large"),
        "/same": NotModified(),
    }
    if request.url.path in failures:
        raise failures[request.url.path]
    await JSONResponse({"seen": request.state.request_id})(scope, receive, send)


def _client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=RequestIds(_app)), base_url="http://kiln")


def _answered(status: int) -> float:
    return metrics.REQUESTS.labels("GET", "(none)", str(status))._value.get()


async def test_each_answer_carries_the_id_the_app_saw() -> None:
    before = _answered(200)
    async with _client() as client:
        first, second = await client.get("/a"), await client.get("/a")
    assert first.headers["request-id"] == first.json()["seen"]
    assert first.headers["request-id"] != second.headers["request-id"]
    assert "client-request-id" not in first.headers
    assert _answered(200) == before + 2


@pytest.mark.parametrize(("ask", "echoed"), [("true", True), ("True", True), ("false", False)])
async def test_the_clients_id_comes_back_when_asked(ask: str, echoed: bool) -> None:
    headers = {"client-request-id": "c-1", "return-client-request-id": ask}
    async with _client() as client:
        response = await client.get("/a", headers=headers)
    assert response.headers.get("client-request-id") == ("c-1" if echoed else None)


@pytest.mark.parametrize(
    ("path", "status", "code"), [("/boom", 500, "InternalError"), ("/large", 413, "RequestBodyTooLarge")]
)
async def test_what_escapes_the_app_is_a_batch_error_with_a_request_id(path: str, status: int, code: str) -> None:
    before = _answered(status)
    async with _client() as client:
        response = await client.get(path)
    assert response.status_code == status
    assert response.headers["request-id"]
    assert response.json()["code"] == code
    assert _answered(status) == before + 1


async def test_not_modified_escaping_the_app_is_304() -> None:
    async with _client() as client:
        response = await client.get("/same")
    assert response.status_code == 304 and response.headers["request-id"]
