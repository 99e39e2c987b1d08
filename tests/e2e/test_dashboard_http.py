"""The dashboard's door, over plain HTTP against the shared `kiln serve`: nothing without a session, a session
only for the account key, and no way to be sent elsewhere after signing in. (tests/browser clicks through it.)"""

from __future__ import annotations

import base64
import html
import re

import httpx
import pytest
from azure.batch import models

from kiln.api.client_auth import SharedKeyAuth
from kiln.testing import create_pool_and_wait, unique
from kiln.web import session


@pytest.fixture
def browser(server) -> httpx.Client:
    """An HTTP client that keeps cookies, as a browser does, and follows no redirect by itself."""
    with httpx.Client(base_url=server.endpoint, follow_redirects=False, timeout=30) as client:
        yield client


def _sign_in(browser: httpx.Client, key: str, next: str = "/") -> httpx.Response:
    return browser.post("/ui/login", data={"key": key, "next": next})


def test_without_a_session_every_page_sends_to_the_login_form(browser, server) -> None:
    response = browser.get("/ui/jobs/j1", params={"state": "failed"})
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login?next=%2Fui%2Fjobs%2Fj1%3Fstate%3Dfailed"
    polled = browser.get("/", headers={"HX-Request": "true"})  # a live refresh: htmx goes to the form itself
    assert (polled.status_code, polled.headers["hx-redirect"]) == (401, "/ui/login?next=%2F")
    signed = browser.get("/", auth=SharedKeyAuth(server.account_name, server.account_key))
    assert signed.status_code == 303  # a Batch request's signature is not a dashboard session
    forged = browser.get("/", cookies={session.COOKIE: f"{server.account_name}.9999999999.AAAA"})
    assert forged.status_code == 303


def test_a_wrong_key_gets_no_cookie_and_the_right_one_a_strict_http_only_session(browser, server) -> None:
    refused = _sign_in(browser, "bm90LXRoZS1rZXk=")
    assert refused.status_code == 403 and "set-cookie" not in refused.headers
    accepted = _sign_in(browser, server.account_key, next="/ui/jobs/j1")
    assert (accepted.status_code, accepted.headers["location"]) == (303, "/ui/jobs/j1")
    cookie = accepted.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    assert browser.get("/").status_code == 200


@pytest.mark.parametrize("target", ["//elsewhere.example/", "https://elsewhere.example/", "javascript:alert(1)"])
def test_signing_in_never_sends_to_another_site(browser, server, target: str) -> None:
    assert _sign_in(browser, server.account_key, next=target).headers["location"] == "/"


def test_a_missing_job_is_a_page_that_says_so_and_pages_are_not_framed_or_cached(browser, server) -> None:
    _sign_in(browser, server.account_key)
    response = browser.get("/ui/jobs/no-such-job")
    assert response.status_code == 404 and "JobNotFound" in response.text
    assert response.headers["x-frame-options"] == "DENY" and response.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert browser.get("/ui/static/htmx.min.js").headers["content-type"].startswith("text/javascript")
    assert browser.get("/ui/static/pages.py").status_code == 404  # only the files it names


def test_the_login_token_signs_in_without_the_account_key(browser, server) -> None:
    token = session.login_token(server.account_name, base64.b64decode(server.account_key))
    assert _sign_in(browser, token).status_code == 303
    assert browser.get("/").status_code == 200


def _task_page(browser: httpx.Client, url: str) -> tuple[list[str], str, dict[str, str]]:
    """A job page's task rows (ids), its "N matching" line and its pager's links by id (earlier, later)."""
    response = browser.get(url)
    assert response.status_code == 200, response.text[:2000]
    ids = re.findall(r'<tr data-task="([^"]+)">', response.text)
    matching = re.search(r'<p class="muted" id="matching">([^<]*)</p>', response.text)
    pager = re.findall(r'<a id="(earlier|later)" href="([^"]+)">', response.text)
    return ids, matching[1] if matching else "", {name: html.unescape(href) for name, href in pager}


def test_a_job_of_120_tasks_is_paged_by_the_server_50_at_a_time_forward_and_back(
    browser, server, client, cleanup
) -> None:
    pool_id = create_pool_and_wait(client, nodes=0)  # no node: the tasks stay active
    cleanup(pool=pool_id)
    job_id = unique("paged")
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id)))
    cleanup(job=job_id)
    added = [f"t{n:03}" for n in range(120)]
    client.create_tasks(job_id, [models.BatchTaskCreateOptions(id=task, command_line="true") for task in added])
    _sign_in(browser, server.account_key)

    first, matching, pager = _task_page(browser, f"/ui/jobs/{job_id}")
    assert (len(first), matching, set(pager)) == (50, "120 matching", {"later"})  # the first page: no way back
    second, matching, pager = _task_page(browser, pager["later"])
    assert (len(second), matching, set(pager)) == (50, "120 matching", {"earlier", "later"})
    third, matching, pager = _task_page(browser, pager["later"])
    assert (len(third), matching, set(pager)) == (20, "120 matching", {"earlier"})  # the last page: no way on
    assert sorted(first + second + third) == added  # every task once, none twice

    back, _, pager = _task_page(browser, pager["earlier"])
    assert back == second
    back, _, pager = _task_page(browser, pager["earlier"])
    assert (back, set(pager)) == (first, {"later"})

    active, matching, pager = _task_page(browser, f"/ui/jobs/{job_id}?state=active")  # a filter pages as well
    assert (active, matching, set(pager)) == (first, "120 matching", {"later"})
    assert "state=active" in pager["later"]
    none, matching, pager = _task_page(browser, f"/ui/jobs/{job_id}?state=completed")
    assert (none, matching, pager) == ([], "0 matching", {})
