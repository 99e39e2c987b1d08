"""The multi-host tests skip where network namespaces cannot be made, with the reason, unless CI requires them."""

from __future__ import annotations

import pytest

from kiln import testing_netns


@pytest.fixture
def not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(testing_netns.os, "geteuid", lambda: 1000)


def test_not_root_skips_with_the_reason(not_root: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(testing_netns.REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="need root"):
        testing_netns.require()


def test_required_turns_the_skip_into_a_failure(not_root: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(testing_netns.REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="need root.*KILN_TEST_REQUIRE_NETNS=1"):
        testing_netns.require()


def test_no_ip_command_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(testing_netns.os, "geteuid", lambda: 0)
    monkeypatch.setattr(testing_netns.shutil, "which", lambda name: None)
    assert "iproute2" in (testing_netns.unavailable() or "")
