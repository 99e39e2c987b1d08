"""The app in-process, with no store: for requests answered before a route touches one."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from kiln.api.app import create_app
from kiln.api.client_auth import SharedKeyAuth
from kiln.api.context import Kiln
from kiln.dev_account import DEV_ACCOUNT_KEY, DEV_ACCOUNT_NAME


@pytest.fixture
def app_client(tmp_path: Path) -> Callable[..., httpx.AsyncClient]:
    """Makes a client of the app signing as the development account; settings: Kiln's fields."""
    return lambda **settings: _client(tmp_path, **settings)


@pytest.fixture
async def client(app_client: Callable[..., httpx.AsyncClient]) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client() as client:
        yield client


def _client(data_dir: Path, **settings: Any) -> httpx.AsyncClient:
    state = Kiln(
        control=cast(Any, None),
        data_dir=data_dir,
        account_name=DEV_ACCOUNT_NAME,
        account_key=base64.b64decode(DEV_ACCOUNT_KEY),
        **settings,
    )
    transport = httpx.ASGITransport(create_app(state), raise_app_exceptions=False)
    auth = SharedKeyAuth(DEV_ACCOUNT_NAME, DEV_ACCOUNT_KEY)
    return httpx.AsyncClient(transport=transport, base_url="http://kiln", auth=auth)
