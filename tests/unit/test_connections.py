"""The descriptor limit kiln serve raises, and the connection cap it leaves room for (issue 20.6; the
behaviour under stalled clients is tests/security/test_stalled_requests.py)."""

from __future__ import annotations

import json
import resource
from collections.abc import Iterator

import pytest

from kiln import connections


@pytest.fixture
def nofile() -> Iterator[tuple[int, int]]:
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield limits
    resource.setrlimit(resource.RLIMIT_NOFILE, limits)


def test_the_soft_descriptor_limit_is_raised_to_the_hard_one(nofile: tuple[int, int]) -> None:
    hard = nofile[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
    raised = connections.raise_nofile()
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == raised
    assert raised == (hard if hard != resource.RLIM_INFINITY else 1 << 20)
    assert connections.raise_nofile() == raised  # already raised: nothing to do


@pytest.mark.parametrize(
    ("nofile", "wanted", "cap"),
    [(1 << 20, 4096, 4096), (1024, 4096, 1024 - connections.RESERVED_FDS), (100, 4096, 16), (20000, 10, 10)],
)
def test_the_cap_leaves_descriptors_for_everything_else(nofile: int, wanted: int, cap: int) -> None:
    assert connections.connection_cap(nofile, wanted) == cap


def test_a_refused_connection_gets_batchs_server_busy() -> None:
    head, _, body = connections.busy_response().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ") and b"Connection: close" in head and b"Retry-After: 1" in head
    assert json.loads(body)["code"] == "ServerBusy"
