"""The node's Blob storage client (azure-storage-blob, synchronous: callers run it in a thread) and what its
errors mean to a task: the failure codes of resource files and output files tell these causes apart."""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # azure.storage.blob is imported when first needed: most steps move no blobs
    from azure.storage.blob import ContainerClient

#: Connect and per-read bounds (seconds); a transfer as a whole has none (blobs can be large).
CONNECT_TIMEOUT, READ_TIMEOUT = 10.0, 60.0
#: Bytes per request of a download or an upload: what a transfer holds in memory at most.
CHUNK = 4 << 20
#: The SDK's own retries of a request that failed on the way (a refused connection, a 500, a timeout).
REQUEST_RETRIES = 2


class Cause(Enum):
    CONTAINER_NOT_FOUND = "container not found"
    BLOB_NOT_FOUND = "blob not found"
    ACCESS_DENIED = "access denied"
    OTHER = "other"


def container_client(url: str, retries: int = REQUEST_RETRIES) -> ContainerClient:
    """A client of the container a URL names (its SAS token, if any, is the credential; none: a public one)."""
    from azure.storage.blob import ContainerClient

    return ContainerClient.from_container_url(
        url,
        connection_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        retry_total=retries,
        max_single_get_size=CHUNK,
        max_chunk_get_size=CHUNK,
        max_single_put_size=CHUNK,
        max_block_size=CHUNK,
    )


def cause(exc: Exception) -> Cause:
    """What went wrong, from Blob storage's error code (or status, for a HEAD, which has no body)."""
    from azure.core.exceptions import HttpResponseError

    if not isinstance(exc, HttpResponseError):
        return Cause.OTHER
    code = getattr(exc, "error_code", None) or ""
    if code == "ContainerNotFound":
        return Cause.CONTAINER_NOT_FOUND
    if code == "BlobNotFound":
        return Cause.BLOB_NOT_FOUND
    if exc.status_code in (401, 403):  # AuthenticationFailed (expired, bad signature), AuthorizationPermissionMismatch…
        return Cause.ACCESS_DENIED
    return Cause.OTHER


def describe(exc: Exception) -> str:
    """One line for a failure message: the storage error code and its message's first line, never a SAS."""
    from azure.core.exceptions import HttpResponseError

    if isinstance(exc, HttpResponseError):
        code = getattr(exc, "error_code", None) or f"HTTP {exc.status_code}"
        message = (exc.reason or "") if exc.message is None else exc.message.splitlines()[0]
        return f"{code}: {message}"
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
