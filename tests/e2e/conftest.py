"""End-to-end fixtures: a real `kiln serve` subprocess driven by the official azure-batch SDK."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from azure.batch import BatchClient

from kiln.cli.embedded import EmbeddedServer
from kiln.testing import create_pool_and_wait, make_client


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Iterator[EmbeddedServer]:
    """One server for the read-mostly tests; tests that restart or kill it start their own."""
    with EmbeddedServer(tmp_path_factory.mktemp("kiln")) as running:
        yield running


@pytest.fixture(scope="session")
def client(server) -> BatchClient:
    return make_client(server)


@pytest.fixture(scope="session")
def pool(client) -> str:
    """A shared 2-node pool with 2 slots per node."""
    return create_pool_and_wait(client, nodes=2, slots=2, pool_id="shared-pool")
