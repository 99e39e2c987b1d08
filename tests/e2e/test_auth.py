"""Shared Key and api-version, as the SDK and other clients meet them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from azure.core.exceptions import HttpResponseError

from kiln.api.client_auth import SharedKeyAuth
from kiln.testing import make_client
from kiln.wire import versions

WRONG_KEY = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ=="


def _error(response: httpx.Response) -> str:
    return response.json()["code"]


def test_sdk_with_wrong_key_gets_403_authentication_failed(server):
    with pytest.raises(HttpResponseError) as caught:
        list(make_client(server, key=WRONG_KEY).list_pools())
    assert caught.value.status_code == 403
    assert caught.value.error.code == "AuthenticationFailed"


@pytest.mark.parametrize("authorization", [None, "Bearer abc", "SharedKey nocolon", "SharedKey kilndev:"])
def test_missing_or_malformed_authorization_is_403(server, authorization):
    headers = {"ocp-date": format_datetime(datetime.now(UTC), usegmt=True)}
    if authorization:
        headers["Authorization"] = authorization
    response = httpx.get(f"{server.endpoint}/pools", params={"api-version": "2025-06-01"}, headers=headers)
    assert response.status_code == 403
    assert _error(response) == "AuthenticationFailed"


def test_ocp_date_more_than_15_minutes_off_is_403(server):
    stale = datetime.now(UTC) - timedelta(minutes=16)
    response = httpx.get(
        f"{server.endpoint}/pools",
        params={"api-version": "2025-06-01"},
        headers={"ocp-date": format_datetime(stale, usegmt=True)},
        auth=SharedKeyAuth(server.account_name, server.account_key),
    )
    assert response.status_code == 403
    assert _error(response) == "AuthenticationFailed"


@pytest.mark.parametrize("version", versions.VERSIONS)
def test_every_supported_api_version_is_accepted(server, version):
    response = httpx.get(
        f"{server.endpoint}/pools",
        params={"api-version": version},
        auth=SharedKeyAuth(server.account_name, server.account_key),
    )
    assert response.status_code == 200
    assert response.json()["value"] is not None
    assert response.headers["request-id"]


def test_unknown_api_version_is_400_naming_supported_versions(server):
    response = httpx.get(
        f"{server.endpoint}/pools",
        params={"api-version": "2019-01-01.8.0"},
        auth=SharedKeyAuth(server.account_name, server.account_key),
    )
    assert response.status_code == 400
    assert _error(response) == "UnsupportedRequestVersion"
    assert "2025-06-01" in response.json()["message"]["value"]
    assert "2024-02-01.19.0" in response.json()["message"]["value"]


def test_client_request_id_is_echoed_when_asked(server):
    response = httpx.get(
        f"{server.endpoint}/pools",
        params={"api-version": "2025-06-01"},
        headers={"client-request-id": "4b1b0b1e-1111-2222-3333-444455556666", "return-client-request-id": "true"},
        auth=SharedKeyAuth(server.account_name, server.account_key),
    )
    assert response.headers["client-request-id"] == "4b1b0b1e-1111-2222-3333-444455556666"
