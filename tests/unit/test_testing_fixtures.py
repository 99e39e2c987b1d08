"""Tests marked `root` skip when not run as root, with the reason, unless CI requires root
(KILN_TEST_REQUIRE_ROOT=1, set by .ci/run): then they fail, so a CI that lost root cannot pass quietly."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiln import testing_fixtures

ROOT = Path(__file__).resolve().parents[2]
pytest_plugins = ["pytester"]


@pytest.fixture
def not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(testing_fixtures.os, "geteuid", lambda: 1000)


def test_not_root_skips_with_the_reason(not_root: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(testing_fixtures.REQUIRE_ROOT_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs root: mounts a tmpfs"):
        testing_fixtures.require_root("mounts a tmpfs")


def test_required_turns_the_skip_into_a_failure(not_root: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(testing_fixtures.REQUIRE_ROOT_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="needs root: mounts a tmpfs.*KILN_TEST_REQUIRE_ROOT=1"):
        testing_fixtures.require_root("mounts a tmpfs")


def test_root_runs_the_test(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(testing_fixtures.os, "geteuid", lambda: 0)
    monkeypatch.setenv(testing_fixtures.REQUIRE_ROOT_ENV, "1")
    testing_fixtures.require_root("mounts a tmpfs")


MARKED = """
import pytest

pytestmark = pytest.mark.root("mounts a tmpfs")


@pytest.fixture
def disk():
    raise AssertionError("no fixture of a marked test is set up without root")


def test_marked(disk):
    pass
"""


@pytest.mark.parametrize(("required", "outcome"), [(None, {"skipped": 1}), ("1", {"errors": 1})])
def test_a_marked_test_without_root_skips_or_fails_before_its_fixtures(
    pytester: pytest.Pytester, not_root: None, monkeypatch: pytest.MonkeyPatch, required: str | None, outcome: dict
) -> None:
    if required is None:
        monkeypatch.delenv(testing_fixtures.REQUIRE_ROOT_ENV, raising=False)
    else:
        monkeypatch.setenv(testing_fixtures.REQUIRE_ROOT_ENV, required)
    pytester.makeconftest("from kiln.testing_fixtures import pytest_runtest_setup  # noqa: F401")
    pytester.makeini("[pytest]\nmarkers = root(why): needs root")
    pytester.makepyfile(test_marked=MARKED)
    result = pytester.runpytest_inprocess("-p", "no:xdist", "-p", "no:benchmark", "-p", "no:cacheprovider", "-rsE")
    result.assert_outcomes(**outcome)
    result.stdout.fnmatch_lines(["*needs root: mounts a tmpfs*"])


@pytest.mark.parametrize("directory", ["tests/e2e", "tests/security"])
def test_the_conftests_apply_the_root_mark(directory: str) -> None:
    """The hook is where the marked tests are (a conftest that lost it would let them run, and fail, unmarked)."""
    conftest = (ROOT / directory / "conftest.py").read_text()
    assert "pytest_runtest_setup" in conftest


def test_ci_requires_root() -> None:
    assert "export KILN_TEST_REQUIRE_ROOT=1" in (ROOT / ".ci/run").read_text()
