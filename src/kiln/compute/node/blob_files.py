"""Resource files from a Blob container (storageContainerUrl, autoStorageContainerName): every blob whose name
starts with blobPrefix, kept at its blob path under filePath. Each blob streams to disk a chunk at a time."""

from __future__ import annotations

import os

from kiln.compute.node import blob_storage
from kiln.compute.node.blob_storage import Cause
from kiln.compute.node.failures import SERVER_ERROR, USER_ERROR, StepFailure
from kiln.compute.node.layout import TaskPaths, relative_path
from kiln.compute.node.resource_files import create_failed, inside_wd, new_part, redact
from kiln.compute.node.transfers import DOWNLOAD, TransferLog
from kiln.compute.protocol import ResourceFile

#: failureInfo of a container that cannot be listed, and of a blob that cannot be fetched: (category, code,
#: message). The codes are Batch's (TaskFailureInformationCodes); the messages of ResourceContainerAccessDenied,
#: ResourceContainerListMiscError and BlobDownloadMiscError are Azure's as its documentation quotes them, the
#: others Kiln's words (docs/compatibility.md). Kiln adds which container or blob, and the storage error.
_LIST_MISC = (
    SERVER_ERROR,
    "ResourceContainerListMiscError",
    "Miscellaneous error encountered while listing one of the specified Azure Blob container(s)",
)
LIST_CODES = {
    Cause.CONTAINER_NOT_FOUND: (
        USER_ERROR,
        "ResourceContainerNotFound",
        "One of the specified Azure Blob container(s) was not found",
    ),
    Cause.ACCESS_DENIED: (
        USER_ERROR,
        "ResourceContainerAccessDenied",
        "Access for one of the specified Azure Blob container(s) is denied",
    ),
    Cause.BLOB_NOT_FOUND: _LIST_MISC,
    Cause.OTHER: _LIST_MISC,
}
DOWNLOAD_CODES = {
    Cause.CONTAINER_NOT_FOUND: (USER_ERROR, "BlobNotFound", "One of the specified Azure Blob(s) was not found"),
    Cause.BLOB_NOT_FOUND: (USER_ERROR, "BlobNotFound", "One of the specified Azure Blob(s) was not found"),
    Cause.ACCESS_DENIED: (USER_ERROR, "BlobAccessDenied", "Access for one of the specified Azure Blob(s) is denied"),
    Cause.OTHER: (
        SERVER_ERROR,
        "BlobDownloadMiscError",
        "Miscellaneous error encountered while downloading one of the specified Azure Blob(s)",
    ),
}


def download_container(paths: TaskPaths, file: ResourceFile, mode: int, log: TransferLog) -> list[str]:
    """Blocking (run it in a thread). Returns the files written, relative to wd; log counts what moved."""
    if file.container_url is None:
        raise StepFailure.of(
            USER_ERROR,
            "AutoStorageNotConfigured",
            f"autoStorageContainerName {file.source!r}: the account has no linked storage account "
            "(kiln serve --storage-connection-string or KILN_STORAGE_CONNECTION_STRING)",
        )
    base = relative_path(file.file_path) if file.file_path else None
    container = blob_storage.container_client(file.container_url)
    source = file.source or redact(file.container_url)
    written: list[str] = []
    with container:
        try:
            blobs = [blob.name for blob in container.list_blobs(name_starts_with=file.blob_prefix or None)]
        except Exception as exc:  # the SDK's errors, and the OS's under it
            raise _failure(LIST_CODES, exc, file, None) from None
        for name in blobs:
            if name.endswith("/"):  # a directory marker (hierarchical namespace): no file
                continue
            try:
                rel = relative_path(name) if base is None else base / relative_path(name)
            except ValueError as error:
                raise create_failed(file, f"blob {name!r}: {error}") from None
            dest = inside_wd(paths, rel, file)
            part = new_part(dest, file)
            try:
                with open(part.fd, "wb") as out, log.timed(DOWNLOAD, source) as moved:
                    moved.bytes += container.download_blob(name, max_concurrency=1).readinto(out)
                    moved.files += 1
                os.replace(part.path, dest)
            except OSError as exc:
                raise create_failed(file, f"{dest.name}: {exc.strerror or exc}") from None
            except Exception as exc:
                raise _failure(DOWNLOAD_CODES, exc, file, name) from None
            finally:
                part.path.unlink(missing_ok=True)
            os.chmod(dest, mode)
            written.append(str(rel))
    return written


def _failure(
    codes: dict[Cause, tuple[str, str, str]], exc: Exception, file: ResourceFile, blob: str | None
) -> StepFailure:
    return _failed(codes[blob_storage.cause(exc)], blob_storage.describe(exc), file, blob)


def listing_failure(file: ResourceFile, status: int) -> StepFailure:
    """The failure of a container listing the blob store answered with an HTTP error status."""
    cause = {404: Cause.CONTAINER_NOT_FOUND, 401: Cause.ACCESS_DENIED, 403: Cause.ACCESS_DENIED}.get(
        status, Cause.OTHER
    )
    return _failed(LIST_CODES[cause], f"HTTP {status}", file, None)


def _failed(codes: tuple[str, str, str], why: str, file: ResourceFile, blob: str | None) -> StepFailure:
    category, code, message = codes
    where = file.source or _container_name(file.container_url or "")
    details = {"FilePath": file.file_path} if file.file_path else {}
    return StepFailure.of(category, code, f"{message}: {where}{'/' + blob if blob else ''}: {why}", **details)


def _container_name(url: str) -> str:
    """The URL's path without its SAS token: account/container on Azurite, container on Azure."""
    return redact(url).split("://", 1)[-1].split("/", 1)[-1]
