"""A container's blobs as resource files (blob_files): what a blob that cannot be fetched fails the step with.

The container client is faked at blob_storage.container_client, the seam the node's code goes through; each
error is the azure-core exception the storage SDK raises, with its status and storage error code."""

from __future__ import annotations

from typing import IO, Any

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)

from kiln.compute.node import blob_files, blob_storage, layout
from kiln.compute.node.failures import StepFailure
from kiln.compute.node.transfers import TransferLog
from kiln.compute.protocol import ResourceFile

URL = "http://127.0.0.1:10000/devstoreaccount1/inputs?sv=2025-01-05&sp=rl&sig=secret"


def storage_error(kind: type[HttpResponseError], status: int, code: str) -> HttpResponseError:
    """As azure-storage-blob raises it: the status of the response and the x-ms-error-code it carried."""
    error = kind(message=f"{code} said the service.\nRequestId:00000000")
    error.status_code = status
    error.error_code = code  # type: ignore[attr-defined]  # set by the storage SDK's error processing
    return error


class Download:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def readinto(self, stream: IO[bytes]) -> int:
        return stream.write(self.data)


class Container:
    """Lists ok.txt and bad.txt; ok.txt downloads, bad.txt raises the error given."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def list_blobs(self, name_starts_with: str | None = None) -> list[Any]:
        return [type("Blob", (), {"name": name})() for name in ("ok.txt", "bad.txt")]

    def download_blob(self, name: str, **options: Any) -> Download:
        if name == "bad.txt":
            raise self.error
        return Download(b"fine")


@pytest.mark.parametrize(
    ("error", "category", "code", "message"),
    [
        (
            storage_error(ResourceNotFoundError, 404, "BlobNotFound"),
            "usererror",
            "BlobNotFound",
            "One of the specified Azure Blob(s) was not found",
        ),
        (  # the container went away between its listing and the download
            storage_error(ResourceNotFoundError, 404, "ContainerNotFound"),
            "usererror",
            "BlobNotFound",
            "One of the specified Azure Blob(s) was not found",
        ),
        (  # the SAS expired between the listing and the download
            storage_error(ClientAuthenticationError, 403, "AuthenticationFailed"),
            "usererror",
            "BlobAccessDenied",
            "Access for one of the specified Azure Blob(s) is denied",
        ),
        (
            storage_error(HttpResponseError, 403, "AuthorizationPermissionMismatch"),
            "usererror",
            "BlobAccessDenied",
            "Access for one of the specified Azure Blob(s) is denied",
        ),
        (
            storage_error(HttpResponseError, 500, "InternalError"),
            "servererror",
            "BlobDownloadMiscError",
            "Miscellaneous error encountered while downloading one of the specified Azure Blob(s)",
        ),
        (
            ServiceRequestError("Failed to establish a new connection: [Errno 111] Connection refused"),
            "servererror",
            "BlobDownloadMiscError",
            "Miscellaneous error encountered while downloading one of the specified Azure Blob(s)",
        ),
    ],
    ids=["blob-not-found", "container-gone", "authentication-failed", "permission-mismatch", "500", "unreachable"],
)
def test_a_blob_that_cannot_be_downloaded_fails_the_step_with_its_code(
    monkeypatch: pytest.MonkeyPatch,
    paths: layout.TaskPaths,
    error: Exception,
    category: str,
    code: str,
    message: str,
) -> None:
    monkeypatch.setattr(blob_storage, "container_client", lambda url, retries=None: Container(error))
    file = ResourceFile(None, "data", container_url=URL)
    with pytest.raises(StepFailure) as caught:
        blob_files.download_container(paths, file, 0o770, TransferLog())
    info = caught.value.info
    assert (info["category"], info["code"]) == (category, code)
    assert info["message"].startswith(f"{message}: devstoreaccount1/inputs/bad.txt: ")  # which blob, and why
    assert "sig=" not in info["message"]
    assert info["details"] == [{"name": "FilePath", "value": "data"}]
    assert (paths.wd / "data" / "ok.txt").read_bytes() == b"fine"
    assert sorted(p.name for p in (paths.wd / "data").iterdir()) == ["ok.txt"]  # no part of bad.txt is left
