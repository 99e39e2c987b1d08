"""Browser tests: Debian's headless Chromium, driven by Playwright, against a real `kiln serve` (the shared
session server of kiln.testing_fixtures). One browser for the whole session; each test a context of its own.

Without Chromium (or Playwright) the tests skip, unless KILN_TEST_REQUIRE_BROWSER=1 (set by .ci/run) makes
that a failure. Screenshots go to test-artifacts/browser/ (git-ignored)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kiln.testing_fixtures import cleanup, client, marks_dir, open_base, open_tmp, pool, server  # noqa: F401

#: Where Debian's chromium package puts the browser (`apt-get install -y chromium`).
CHROMIUM = "/usr/bin/chromium"
#: Headless, and nothing that reaches out of the machine.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"


def _missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if shutil.which(CHROMIUM) is None:
        return f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install -e '.[test]')"
    return None


@pytest.fixture(scope="module")  # not longer: Playwright's sync API keeps an event loop running in this thread
def browser() -> Iterator[Any]:  # while it is open, and async tests after it on the same xdist worker would fail
    reason = _missing()
    if reason is not None:
        if os.environ.get("KILN_TEST_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=30_000)  # expect() polls the page; 5 s by default is short on a loaded machine
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def page(browser, server) -> Iterator[Any]:  # noqa: F811 (the fixture imported above)
    """A page in a fresh context (no session cookie), 1280 pixels wide."""
    context = browser.new_context(base_url=server.endpoint, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    opened = context.new_page()
    # A script error, a resource the Content-Security-Policy blocks, or a failed request other than a page's own
    # (a test may well go to a job that is not there) fails the test.
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    opened.on(  # but a live refresh in flight when the test leaves the page is cancelled (ERR_ABORTED), rightly
        "requestfailed",
        lambda request: (
            errors.append(f"{request.url}: {request.failure}") if request.failure != "net::ERR_ABORTED" else None
        ),
    )
    opened.on(
        "response",
        lambda r: (
            errors.append(f"{r.url}: {r.status}") if r.status >= 400 and r.request.resource_type != "document" else None
        ),
    )
    try:
        yield opened
    finally:
        context.close()
    assert [e for e in errors if not e.startswith("Failed to load resource")] == []  # a page's status: see above


@pytest.fixture
def signed_in(page, server) -> Any:  # noqa: F811
    """A page whose context has signed in with the account key."""
    page.goto("/ui/login")
    page.fill("input[name=key]", server.account_key)
    page.click("button[type=submit]")
    page.wait_for_url("**/")
    return page
