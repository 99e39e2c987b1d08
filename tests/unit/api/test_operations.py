"""A Batch operation Kiln lacks is answered 501 NotImplemented naming it; a path Batch lacks stays 404."""

from __future__ import annotations

import re

import httpx
import pytest

from kiln.api.operations import OPERATIONS, batch_operation


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


async def test_an_operation_kiln_lacks_is_501_naming_it(client: httpx.AsyncClient) -> None:
    response = await client.get("/pools/p1/nodes/tvm-1/rdp", params={"api-version": "2022-01-01.15.0"})
    assert (response.status_code, response.json()["code"]) == (501, "NotImplemented")
    assert "'get node remote desktop file' (GET /pools/p1/nodes/tvm-1/rdp)" in response.json()["message"]["value"]


async def test_a_path_batch_does_not_have_is_404_invalid_uri(client: httpx.AsyncClient) -> None:
    response = await client.get("/no/such/thing", params={"api-version": "2025-06-01"})
    assert (response.status_code, response.json()["code"]) == (404, "InvalidUri")


#: The operations Kiln lacks: all of older api-versions (certificates, the remote desktop file).
LACKED = {
    "create certificate",
    "list certificates",
    "cancel certificate deletion",
    "delete certificate",
    "get certificate",
    "get node remote desktop file",
}


async def test_every_other_operation_reaches_a_route(client: httpx.AsyncClient) -> None:
    """Every operation of 2025-06-01 (and the lifetime statistics of older versions) reaches a route of its own,
    whatever that route then answers (here, with no store, mostly an error), never 501 (docs/compatibility.md)."""
    answered = {}
    for method, template, name in OPERATIONS:
        path = re.sub(r"\{\w+\}", "x1", template.replace("{filePath}", "dir/file.txt"))
        response = await client.request(method, path, params={"api-version": "2025-06-01"})
        answered[name] = response.status_code
    assert {name for name, status in answered.items() if status == 501} == LACKED
    assert len(OPERATIONS) - len(LACKED) == 72 + 2  # 2025-06-01's, and the two lifetime statistics
