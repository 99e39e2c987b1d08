"""The client tests run against the session's shared server; what their scenarios upload goes to the session's
Azurite, in one container."""

from __future__ import annotations

from datetime import timedelta

import pytest
from azure.storage.blob import BlobServiceClient

from kiln.testing_azurite import Azurite, azurite, container_sas_url  # noqa: F401
from kiln.testing_clients import Outputs
from kiln.testing_fixtures import open_base, server  # noqa: F401


@pytest.fixture(scope="session")
def outputs(request) -> Outputs | None:
    """A container with a SAS URL for what the scenarios upload, or None without Azurite (the scenarios then
    upload nothing; the tests that read it back skip, or fail where Azurite is required)."""
    try:
        running: Azurite = request.getfixturevalue("azurite")
    except pytest.skip.Exception:
        return None
    container = BlobServiceClient.from_connection_string(running.connection_string).create_container("matrix")
    url = container_sas_url(
        container.url.rsplit("/", 1)[0], container.container_name, timedelta(hours=2), write=True, create=True
    )
    return Outputs(container, url)
