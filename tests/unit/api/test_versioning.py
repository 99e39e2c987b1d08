"""The api-version check in front of every Batch route, strict and loose, on the app in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from typer.testing import CliRunner

from kiln import server
from kiln.cli import main
from kiln.server import Settings
from kiln.wire import versions

#: Refused by the body check, which runs only once the api-version is accepted (no store needed).
NOT_JSON = {"content": b"not json", "headers": {"content-type": "application/json"}}


@pytest.fixture
async def strict(app_client: Callable[..., httpx.AsyncClient]) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client() as client:
        yield client


@pytest.fixture
async def loose(app_client: Callable[..., httpx.AsyncClient]) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(loose_api_version=True) as client:
        yield client


@pytest.mark.parametrize("version", versions.VERSIONS)
async def test_every_supported_version_is_accepted(strict: httpx.AsyncClient, version: str) -> None:
    response = await strict.post("/jobs", params={"api-version": version}, **NOT_JSON)
    assert response.json()["code"] == "InvalidRequestBody"


async def test_an_unknown_version_is_400_listing_every_supported_one(strict: httpx.AsyncClient) -> None:
    response = await strict.post("/jobs", params={"api-version": "2019-08-01.10.0"}, **NOT_JSON)
    assert (response.status_code, response.json()["code"]) == (400, "UnsupportedRequestVersion")
    message = response.json()["message"]["value"]
    assert all(version in message for version in versions.VERSIONS)


async def test_loose_serves_an_unknown_version_as_the_newest(loose: httpx.AsyncClient) -> None:
    response = await loose.post("/jobs", params={"api-version": "2019-08-01.10.0"}, **NOT_JSON)
    assert response.json()["code"] == "InvalidRequestBody"


async def test_loose_still_needs_an_api_version(loose: httpx.AsyncClient) -> None:
    response = await loose.post("/jobs", **NOT_JSON)
    assert response.json()["code"] == "MissingRequiredQueryParameter"


@pytest.mark.parametrize(("value", "loose"), [("1", True), ("true", True), ("", False), ("0", False)])
def test_kiln_loose_api_version_sets_loose(monkeypatch: pytest.MonkeyPatch, value: str, loose: bool) -> None:
    monkeypatch.setenv("KILN_LOOSE_API_VERSION", value)
    assert Settings.from_env().loose_api_version is loose


@pytest.mark.parametrize(
    ("argv", "env", "loose"), [(["--loose-api-version"], "", True), ([], "1", True), ([], "", False)]
)
def test_kiln_serve_takes_loose_from_its_flag_or_the_environment(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], env: str, loose: bool
) -> None:
    served: list[Settings] = []
    monkeypatch.setattr(server, "serve", lambda settings, on_ready=None: served.append(settings))
    monkeypatch.setenv("KILN_LOOSE_API_VERSION", env)
    result = CliRunner().invoke(main.app, ["serve", *argv])
    assert result.exit_code == 0, result.output
    assert served[0].loose_api_version is loose
