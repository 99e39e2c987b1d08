"""Shared Key verification against vectors signed by the SDK's own policy."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import urlsplit

import httpx
import pytest
from azure.batch._operations._operations import (
    build_batch_download_task_file_request,
    build_batch_list_tasks_request,
)
from azure.batch._patch import BatchSharedKeyAuthPolicy
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.pipeline import PipelineContext, PipelineRequest
from azure.core.rest import HttpRequest

from kiln.api.auth import sign, sign_request, string_to_sign, verify_shared_key
from kiln.api.client_auth import SharedKeyAuth
from kiln.errors import AuthenticationFailed

ACCOUNT = "kilnacct"
KEY_B64 = base64.b64encode(bytes(range(64))).decode()
OTHER_KEY_B64 = base64.b64encode(bytes(range(1, 65))).decode()
ACCOUNTS = {ACCOUNT: base64.b64decode(KEY_B64), "other": base64.b64decode(OTHER_KEY_B64)}
ENDPOINT = "https://kilnacct.eastus.batch.example"
NOW = datetime(2026, 11, 25, 20, 10, 0, tzinfo=UTC)


def rfc1123(moment: datetime) -> str:
    return format_datetime(moment, usegmt=True)


def sdk_sign(request: HttpRequest, key_b64: str = KEY_B64, account: str = ACCOUNT) -> HttpRequest:
    """Sign exactly as azure-batch 15.1.0 does, through its pipeline policy."""
    policy = BatchSharedKeyAuthPolicy(AzureNamedKeyCredential(account, key_b64))
    policy.on_request(PipelineRequest(request, PipelineContext(None)))
    return request


def absolute(request: HttpRequest) -> HttpRequest:
    request.url = ENDPOINT + request.url
    return request


def list_tasks() -> HttpRequest:
    request = build_batch_list_tasks_request(
        "job-1",
        filter="state eq 'active' and startswith(id,'a b''c')",
        select=["id", "state"],
        max_results=10,
        service_timeout=30,
        ocp_date=NOW,
    )
    return absolute(request)


def post_json() -> HttpRequest:
    return HttpRequest(
        "POST",
        f"{ENDPOINT}/jobs/job-1/tasks",
        params={"api-version": "2025-06-01"},
        json={"id": "t1", "commandLine": "echo hi"},
        headers={"ocp-date": rfc1123(NOW), "client-request-id": "abc"},
    )


def post_empty() -> HttpRequest:
    return HttpRequest(
        "POST",
        f"{ENDPOINT}/jobs/job-1/terminate",
        params={"api-version": "2025-06-01"},
        headers={"ocp-date": rfc1123(NOW)},
    )


def download_file() -> HttpRequest:
    request = build_batch_download_task_file_request(
        "job-1", "t1", "wd/out dir/x+y.txt", ocp_range="bytes=0-9", ocp_date=NOW
    )
    return absolute(request)


VECTORS = {"get-filter": list_tasks, "post-json": post_json, "post-empty": post_empty, "file-path": download_file}


def verify(
    request: HttpRequest,
    *,
    now: datetime = NOW,
    path: str | None = None,
    query: str | None = None,
    headers: dict[str, str] | None = None,
    body_length: int | None = None,
) -> str:
    """Verify a signed SDK request as the server would see it on the wire."""
    url = urlsplit(request.url)
    sent = dict(request.headers)
    if headers:
        sent.update(headers)
    length = len(request.content or b"") if body_length is None else body_length
    return verify_shared_key(
        request.method,
        url.path if path is None else path,
        url.query if query is None else query,
        sent,
        length,
        ACCOUNTS,
        now,
    )


def assert_rejected(call, reason: str) -> None:
    with pytest.raises(AuthenticationFailed) as info:
        call()
    assert info.value.status == 403
    assert info.value.code == "AuthenticationFailed"
    assert reason in info.value.values["AuthenticationErrorDetail"]


@pytest.mark.parametrize("make", VECTORS.values(), ids=VECTORS.keys())
def test_sdk_signed_requests_are_accepted(make) -> None:
    assert verify(sdk_sign(make())) == ACCOUNT


def test_sdk_request_without_ocp_date_gets_one_and_verifies() -> None:
    request = sdk_sign(HttpRequest("GET", f"{ENDPOINT}/pools", params={"api-version": "2025-06-01"}))
    now = datetime.now(UTC)
    assert verify(request, now=now) == ACCOUNT


def test_string_to_sign_matches_design_example() -> None:
    headers = {"ocp-date": "Wed, 25 Nov 2026 20:10:00 GMT"}
    text = string_to_sign(
        "GET",
        "/jobs/j1/tasks",
        "api-version=2025-06-01&maxresults=10&$filter=state%20eq%20%27active%27&$select=id,state",
        headers,
        "acct",
    )
    assert text.endswith(
        "\nocp-date:Wed, 25 Nov 2026 20:10:00 GMT\n/acct/jobs/j1/tasks\n$filter:state eq 'active'"
        "\n$select:id,state\napi-version:2025-06-01\nmaxresults:10"
    )
    assert text.startswith("GET\n" + "\n" * 10 + "\nocp-date")


def test_file_path_is_signed_with_its_escapes() -> None:
    request = sdk_sign(download_file())
    path = urlsplit(request.url).path
    assert "%2F" in path
    assert_rejected(lambda: verify(request, path=path.replace("%2F", "/")), "signature")


def test_empty_post_accepts_an_empty_content_length_line() -> None:
    # An older client signs an empty Content-Length line where the SDK signs "0".
    request = post_empty()
    text = string_to_sign(
        "POST",
        "/jobs/job-1/terminate",
        "api-version=2025-06-01",
        {"ocp-date": rfc1123(NOW)},
        ACCOUNT,
        content_length="",
    )
    request.headers["Authorization"] = f"SharedKey {ACCOUNT}:{sign(ACCOUNTS[ACCOUNT], text)}"
    assert verify(request) == ACCOUNT
    assert verify(request, headers={"Content-Length": "0"}) == ACCOUNT


def test_nonempty_body_needs_its_real_content_length() -> None:
    request = sdk_sign(post_json())
    assert_rejected(lambda: verify(request, headers={"Content-Length": "3"}, body_length=3), "signature")


@pytest.mark.parametrize("make", VECTORS.values(), ids=VECTORS.keys())
def test_tampered_path_is_rejected(make) -> None:
    request = sdk_sign(make())
    assert_rejected(lambda: verify(request, path=urlsplit(request.url).path + "x"), "signature")


def test_tampered_query_value_is_rejected() -> None:
    request = sdk_sign(list_tasks())
    query = urlsplit(request.url).query.replace("active", "completed")
    assert_rejected(lambda: verify(request, query=query), "signature")


def test_added_query_parameter_is_rejected() -> None:
    request = sdk_sign(list_tasks())
    query = urlsplit(request.url).query + "&$expand=stats"
    assert_rejected(lambda: verify(request, query=query), "signature")


@pytest.mark.parametrize("header", ["Content-Type", "ocp-range", "If-Match"])
def test_tampered_header_is_rejected(header: str) -> None:
    request = sdk_sign(download_file())
    assert_rejected(lambda: verify(request, headers={header: "tampered"}), "signature")


def test_wrong_key_is_rejected() -> None:
    request = sdk_sign(post_json(), key_b64=OTHER_KEY_B64)
    assert_rejected(lambda: verify(request), "signature")


def test_other_account_with_its_own_key_is_accepted() -> None:
    request = sdk_sign(post_json(), key_b64=OTHER_KEY_B64, account="other")
    assert verify(request) == "other"


@pytest.mark.parametrize("skew", [timedelta(minutes=16), -timedelta(minutes=16)])
def test_date_more_than_15_minutes_off_is_rejected(skew: timedelta) -> None:
    request = sdk_sign(post_json())
    assert_rejected(lambda: verify(request, now=NOW + skew), "15 minutes")


def test_date_within_15_minutes_is_accepted() -> None:
    request = sdk_sign(post_json())
    assert verify(request, now=NOW + timedelta(minutes=14)) == ACCOUNT


def test_tampered_date_is_rejected() -> None:
    request = sdk_sign(post_json())
    later = rfc1123(NOW + timedelta(minutes=1))
    assert_rejected(lambda: verify(request, headers={"ocp-date": later}), "signature")


def test_date_header_is_used_without_ocp_date() -> None:
    headers = {"Date": rfc1123(NOW)}
    auth = sign_request("GET", "/pools", "api-version=2025-06-01", headers, ACCOUNT, ACCOUNTS[ACCOUNT])
    sent = {**headers, "Authorization": auth}
    assert verify_shared_key("GET", "/pools", "api-version=2025-06-01", sent, 0, ACCOUNTS, NOW) == ACCOUNT
    assert_rejected(
        lambda: verify_shared_key(
            "GET", "/pools", "api-version=2025-06-01", sent, 0, ACCOUNTS, NOW + timedelta(hours=1)
        ),
        "Date header",
    )


def test_missing_date_is_rejected() -> None:
    auth = sign_request("GET", "/pools", "", {}, ACCOUNT, ACCOUNTS[ACCOUNT])
    assert_rejected(
        lambda: verify_shared_key("GET", "/pools", "", {"Authorization": auth}, 0, ACCOUNTS, NOW),
        "neither an ocp-date nor a Date",
    )


def test_unparseable_date_is_rejected() -> None:
    headers = {"ocp-date": "yesterday"}
    auth = sign_request("GET", "/pools", "", headers, ACCOUNT, ACCOUNTS[ACCOUNT])
    assert_rejected(
        lambda: verify_shared_key("GET", "/pools", "", {**headers, "Authorization": auth}, 0, ACCOUNTS, NOW),
        "not an RFC 1123 date",
    )


def test_missing_authorization_is_rejected() -> None:
    assert_rejected(
        lambda: verify_shared_key("GET", "/pools", "", {"ocp-date": rfc1123(NOW)}, 0, ACCOUNTS, NOW),
        "Authorization header is missing",
    )


@pytest.mark.parametrize(
    "value",
    [
        "Bearer abc",
        "SharedKey kilnacct",
        "SharedKey :sig",
        "SharedKey kilnacct:",
        "SharedKeyLite kilnacct:sig",
        "kilnacct:sig",
    ],
)
def test_malformed_authorization_is_rejected(value: str) -> None:
    headers = {"ocp-date": rfc1123(NOW), "Authorization": value}
    assert_rejected(lambda: verify_shared_key("GET", "/pools", "", headers, 0, ACCOUNTS, NOW), "malformed")


def test_unknown_account_is_rejected() -> None:
    request = sdk_sign(post_json(), account="nobody")
    assert_rejected(lambda: verify(request), "'nobody' does not exist")


def test_headers_are_matched_case_insensitively() -> None:
    request = sdk_sign(list_tasks())
    url = urlsplit(request.url)
    upper = {name.upper(): value for name, value in request.headers.items()}
    assert verify_shared_key("GET", url.path, url.query, upper, 0, ACCOUNTS, NOW) == ACCOUNT


def test_bytes_path_and_query_are_accepted() -> None:
    request = sdk_sign(download_file())
    url = urlsplit(request.url)
    assert (
        verify_shared_key("GET", url.path.encode(), url.query.encode(), dict(request.headers), 0, ACCOUNTS, NOW)
        == ACCOUNT
    )


def test_raw_path_carrying_the_query_is_accepted() -> None:
    request = sdk_sign(list_tasks())
    url = urlsplit(request.url)
    assert verify(request, path=f"{url.path}?{url.query}") == ACCOUNT


def _httpx_verify(request: httpx.Request, now: datetime) -> str:
    flow = SharedKeyAuth(ACCOUNT, KEY_B64).auth_flow(request)
    signed = next(flow)
    path, _, query = signed.url.raw_path.decode().partition("?")
    return verify_shared_key(signed.method, path, query, signed.headers, len(signed.content), ACCOUNTS, now)


@pytest.mark.parametrize(
    "request_",
    [
        httpx.Request(
            "GET",
            f"{ENDPOINT}/jobs/job-1/tasks",
            params={"api-version": "2025-06-01", "$filter": "state eq 'active'", "$select": "id,state"},
        ),
        httpx.Request("POST", f"{ENDPOINT}/jobs/job-1/tasks?api-version=2025-06-01", json={"id": "t1"}),
        httpx.Request("POST", f"{ENDPOINT}/jobs/job-1/terminate?api-version=2025-06-01"),
        httpx.Request(
            "GET",
            f"{ENDPOINT}/jobs/job-1/tasks/t1/files/wd%2Fx.txt?api-version=2025-06-01",
            headers={"ocp-range": "bytes=0-9"},
        ),
    ],
    ids=["get-filter", "post-json", "post-empty", "file-path"],
)
def test_httpx_auth_is_accepted(request_: httpx.Request) -> None:
    assert _httpx_verify(request_, datetime.now(UTC)) == ACCOUNT


def test_httpx_auth_keeps_a_given_ocp_date() -> None:
    request = httpx.Request("GET", f"{ENDPOINT}/pools", headers={"ocp-date": rfc1123(NOW)})
    assert _httpx_verify(request, NOW) == ACCOUNT
    assert request.headers["ocp-date"] == rfc1123(NOW)


def test_httpx_auth_matches_the_sdk_signature() -> None:
    sdk = sdk_sign(list_tasks())
    url = urlsplit(sdk.url)
    request = httpx.Request("GET", sdk.url, headers=dict(sdk.headers))
    del request.headers["Authorization"]
    next(SharedKeyAuth(ACCOUNT, KEY_B64).auth_flow(request))
    assert request.headers["Authorization"] == sdk.headers["Authorization"]
    assert url.path == request.url.raw_path.decode().partition("?")[0]


def test_invalid_key_is_refused_by_the_client() -> None:
    with pytest.raises(ValueError, match="Base64"):
        SharedKeyAuth(ACCOUNT, "not base64!")
