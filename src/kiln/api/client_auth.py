"""The clients' Shared Key signing on httpx (Kiln's CLI client, embedded servers and tests): apart from
kiln.api.auth, so that a server, which only verifies, does not import httpx."""

from __future__ import annotations

from collections.abc import Generator
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx

from kiln.api.auth import decode_key, sign_request


class SharedKeyAuth(httpx.Auth):
    """httpx auth that signs each request as the Batch SDK does (Kiln's CLI client and tests use it)."""

    def __init__(self, account: str, key_b64: str) -> None:
        self.account = account
        self._key = decode_key(key_b64)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if not request.headers.get("ocp-date"):
            request.headers["ocp-date"] = format_datetime(datetime.now(UTC), usegmt=True)
        raw = request.url.raw_path.decode("ascii")
        path, _, query = raw.partition("?")
        request.headers["Authorization"] = sign_request(
            request.method, path, query, request.headers, self.account, self._key
        )
        yield request
