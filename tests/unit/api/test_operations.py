"""A Batch operation Kiln lacks is answered 501 NotImplemented naming it; a path Batch lacks stays 404."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from kiln.api.app import create_app
from kiln.api.auth import SharedKeyAuth
from kiln.api.context import DEV_ACCOUNT_KEY, DEV_ACCOUNT_NAME, Kiln
from kiln.api.operations import batch_operation


@pytest.mark.parametrize(
    ("method", "path", "operation"),
    [
        ("GET", "/poolusagemetrics", "list pool usage metrics"),
        ("POST", "/pools/p1/nodes/tvm-1/users", "create node user"),
        ("PUT", "/pools/p1/nodes/tvm-1/users/ops", "replace node user"),
        ("GET", "/pools/p1/nodes/tvm-1/files/workitems/j/job-1/t/stdout.txt", "download node file"),
        ("DELETE", "/certificates(thumbprintAlgorithm=sha1,thumbprint=ab12)", "delete certificate"),
        ("get", "/PoolUsageMetrics", "list pool usage metrics"),
        ("GET", "/pools/p1/nodes/tvm-1/nope", None),
        ("PATCH", "/poolusagemetrics", None),
        ("GET", "/pools/p1/nodes", "list nodes"),
    ],
)
def test_batch_operation_names_what_a_request_is(method, path, operation):
    assert batch_operation(method, path) == operation


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    state = Kiln(
        control=cast(Any, None),
        data_dir=tmp_path,
        account_name=DEV_ACCOUNT_NAME,
        account_key=base64.b64decode(DEV_ACCOUNT_KEY),
    )
    transport = httpx.ASGITransport(create_app(state), raise_app_exceptions=False)
    auth = SharedKeyAuth(DEV_ACCOUNT_NAME, DEV_ACCOUNT_KEY)
    async with httpx.AsyncClient(transport=transport, base_url="http://kiln", auth=auth) as client:
        yield client


async def test_an_operation_kiln_lacks_is_501_naming_it(client: httpx.AsyncClient) -> None:
    response = await client.get("/pools/p1/nodes/tvm-1/rdp", params={"api-version": "2022-01-01.15.0"})
    assert (response.status_code, response.json()["code"]) == (501, "NotImplemented")
    assert "'get node remote desktop file' (GET /pools/p1/nodes/tvm-1/rdp)" in response.json()["message"]["value"]


async def test_a_path_batch_does_not_have_is_404_invalid_uri(client: httpx.AsyncClient) -> None:
    response = await client.get("/no/such/thing", params={"api-version": "2025-06-01"})
    assert (response.status_code, response.json()["code"]) == (404, "InvalidUri")
