"""Hostile input before and around authentication: Batch's 4xx, never a 500, and no body read past its limit."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from starlette.requests import Request

from kiln.api import http
from kiln.api.app import BodyLimit
from kiln.errors import BadRequest, InvalidQueryParameterValue, RequestBodyTooLarge

API = {"api-version": "2025-06-01"}
HUGE_YEAR = "Mon, 01 Jan 99999999999 00:00:00 GMT"


def code(response: httpx.Response) -> str:
    return response.json()["code"]


@pytest.mark.parametrize("header", ["ocp-date", "Date"])
async def test_a_date_past_year_9999_is_403_authentication_failed(client: httpx.AsyncClient, header: str) -> None:
    headers = {header: HUGE_YEAR, "Authorization": "SharedKey kilndev:x"}
    response = await client.get("/pools", params=API, headers=headers, auth=None)
    assert (response.status_code, code(response)) == (403, "AuthenticationFailed")


@pytest.mark.parametrize("depth", [65, 900, 5000])
async def test_json_nested_too_deep_is_400_invalid_request_body(client: httpx.AsyncClient, depth: int) -> None:
    body = '{"id":"j","poolInfo":{"poolId":"p"},"x":' + "[" * depth + "]" * depth + "}"
    response = await client.post("/jobs", params=API, content=body, headers={"content-type": "application/json"})
    assert (response.status_code, code(response)) == (400, "InvalidRequestBody")
    assert "levels deep" in response.json()["message"]["value"]


async def test_a_body_that_is_not_utf8_is_400_invalid_request_body(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/jobs", params=API, content=b'{"id":"\xff"}', headers={"content-type": "application/json"}
    )
    assert (response.status_code, code(response)) == (400, "InvalidRequestBody")


async def test_a_body_over_1_mb_is_413_before_authentication(client: httpx.AsyncClient) -> None:
    body = b"x" * (http.MAX_BODY_BYTES + 1)
    response = await client.post(
        "/jobs", params=API, content=body, auth=None, headers={"Authorization": "SharedKey a:b"}
    )
    assert (response.status_code, code(response)) == (413, "RequestBodyTooLarge")
    assert response.headers["request-id"]


async def test_a_too_long_command_line_is_400_naming_it_without_echoing_it(client: httpx.AsyncClient) -> None:
    task = {"id": "t", "commandLine": "x" * 40_000}
    response = await client.post("/jobs/j/tasks", params=API, json=task)
    assert (response.status_code, code(response)) == (400, "InvalidPropertyValue")
    values = {v["key"]: v["value"] for v in response.json()["values"]}
    assert values["PropertyName"] == "commandLine" and "PropertyValue" not in values


async def send_nothing(message: Any) -> None:
    raise AssertionError("nothing is sent: the caller answers")


def asgi_scope(headers: dict[str, str]) -> dict[str, Any]:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return {"type": "http", "method": "POST", "path": "/", "headers": raw, "query_string": b""}


async def test_body_limit_refuses_by_content_length_without_reading() -> None:
    async def receive() -> dict[str, Any]:
        raise AssertionError("the body was read")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await Request(scope, receive).body()

    with pytest.raises(RequestBodyTooLarge):
        await BodyLimit(app)(asgi_scope({"content-length": "99999999999999"}), receive, send_nothing)


async def test_body_limit_stops_a_chunked_body_as_soon_as_it_passes_the_limit() -> None:
    chunk, pulled = b"x" * 65536, 0

    async def receive() -> dict[str, Any]:  # an endless body
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await Request(scope, receive).body()

    with pytest.raises(RequestBodyTooLarge):
        await BodyLimit(app)(asgi_scope({"transfer-encoding": "chunked"}), receive, send_nothing)
    assert pulled == http.MAX_BODY_BYTES // len(chunk) + 1


def request_with(headers: dict[str, str], query: bytes = b"") -> Request:
    return Request({**asgi_scope(headers), "method": "GET", "query_string": query})


ROW = {"etag": '"0x1"', "last_modified": datetime(2026, 1, 1, tzinfo=UTC)}


@pytest.mark.parametrize("header", ["if-modified-since", "if-unmodified-since"])
def test_a_condition_date_past_year_9999_is_400(header: str) -> None:
    with pytest.raises(BadRequest):
        http.check_read_conditions(request_with({header: HUGE_YEAR}), ROW)
    with pytest.raises(BadRequest):
        http.check_write_conditions(request_with({header: HUGE_YEAR}), ROW)


def test_a_condition_date_without_a_zone_is_taken_as_utc() -> None:
    http.check_write_conditions(request_with({"if-unmodified-since": "Fri, 01 Jan 2027 00:00:00 -0000"}), ROW)


@pytest.mark.parametrize("query", [b"$skiptoken=LTU", b"maxresults=1e400", b"maxresults=-1"])  # LTU: "-5"
def test_a_list_window_that_counts_back_or_overflows_is_400(query: bytes) -> None:
    with pytest.raises(InvalidQueryParameterValue):
        http.seek_window(request_with({}, query), 0)


def test_json_depth_counts_without_recursion() -> None:
    assert http.json_depth(json.loads("[" * 200 + "]" * 200)) == http.MAX_JSON_DEPTH + 1  # stops past the limit
    assert http.json_depth({"a": [{"b": 1}]}) == 3


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_a_job_update_with_a_duration_that_is_not_iso_8601_is_400(client: httpx.AsyncClient, method: str) -> None:
    """Found by tests/e2e/test_fuzz.py: it was a 500 once the job was disabled."""
    body = {"poolInfo": {"poolId": "p"}, "constraints": {"maxWallClockTime": "0"}}
    response = await client.request(method, "/jobs/j", params=API, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "InvalidPropertyValue"
    assert "constraints.maxWallClockTime" in response.text
